//! A syslog collector on loopback, as a SIEM's TCP (or TLS) input: reads
//! RFC 6587 octet-counted frames and keeps each message, in arrival order. A
//! frame whose count disagrees with what follows fails the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::pki::Issued;

#[derive(Clone)]
pub struct Collector {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Listens on a free loopback port; in TLS with `certificate` when given.
    pub async fn start(certificate: Option<&Issued>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let acceptor = certificate.map(|issued| {
            let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("the certificate");
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("the key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("a server configuration");
            TlsAcceptor::from(Arc::new(config))
        });
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        actix_web::rt::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (kept, acceptor) = (kept.clone(), acceptor.clone());
                actix_web::rt::spawn(async move {
                    let read = match acceptor {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => read_to_end(tls).await,
                            Err(_) => return,
                        },
                        None => read_to_end(tcp).await,
                    };
                    kept.lock().unwrap().extend(frames(&read));
                });
            }
        });
        Self { port, messages }
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits (`within` at most) until `count` messages have arrived.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<String> {
        super::wait_until(within, &format!("{count} syslog messages"), || {
            let messages = self.messages();
            async move { (messages.len() >= count).then_some(messages) }
        })
        .await
    }
}

async fn read_to_end(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes).await;
    bytes
}

/// The messages of octet-counted frames (`<length> <message>`).
fn frames(mut bytes: &[u8]) -> Vec<String> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let space = bytes
            .iter()
            .position(|b| *b == b' ')
            .expect("a frame's length");
        let length: usize = std::str::from_utf8(&bytes[..space])
            .unwrap()
            .parse()
            .expect("a decimal length");
        let message = &bytes[space + 1..space + 1 + length];
        messages.push(String::from_utf8(message.to_vec()).expect("UTF-8"));
        bytes = &bytes[space + 1 + length..];
    }
    messages
}
