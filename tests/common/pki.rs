//! A certificate authority made at test time (`rcgen`): server and client
//! certificates for the TLS tests of PostgreSQL, Redis and the HTTPS
//! listener, written as PEM files the real servers and the worker read.

use std::path::{Path, PathBuf};

use super::temp_dir::TempDir;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A test CA and the folder its files are written to.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    directory: TempDir,
    /// The CA certificate (PEM file): what a client trusts.
    pub cert_file: PathBuf,
}

/// A certificate and its private key, as PEM files.
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`; its files go to a fresh folder under the system's temp dir.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = distinguished_name(name);
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let directory = TempDir::new(name);
        let cert_file = directory.write("ca.crt", cert.pem().as_bytes());
        Self {
            issuer: Issuer::new(params, key),
            directory,
            cert_file,
        }
    }

    /// The folder this CA writes its files to.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// A server certificate for `names` (DNS names or IP addresses), files `<file>.crt`/`.key`.
    pub fn server(&self, file: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server parameters");
        params.distinguished_name = distinguished_name(names.first().map_or("server", |n| n));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params)
    }

    /// A client certificate whose subject CN is `common_name` (PostgreSQL's
    /// `cert` authentication maps it to the role of that name).
    pub fn client(&self, file: &str, common_name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name = distinguished_name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }

    fn issue(&self, file: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Issued {
            cert_file: self
                .directory
                .write(&format!("{file}.crt"), cert_pem.as_bytes()),
            key_file: self
                .directory
                .write(&format!("{file}.key"), key_pem.as_bytes()),
            cert_pem,
            key_pem,
        }
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}
