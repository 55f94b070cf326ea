//! Every connection to a destination, held to the [`NetworkPolicy`].
//!
//! A destination's host is judged twice: when the destination is created or
//! changed ([`Egress::vet`], so a tenant learns at once), and on every
//! connection, on the addresses its name resolves to then. The second check is
//! the one that protects: a name may be re-pointed at an internal address
//! after it was accepted (DNS rebinding), and a stored destination may predate
//! the policy. Each client is made to connect only to checked addresses:
//!
//! - webhooks (reqwest): a resolver that drops refused addresses
//!   ([`PolicyResolver`]); reqwest does not ask the resolver for a literal
//!   address, so those are checked before each request ([`Egress::check_url`])
//!   and on every redirect hop ([`redirect_policy`]);
//! - S3 (the SDK's hyper client): the same resolver behind the SDK's DNS
//!   trait, and the same check of a literal endpoint before each upload;
//! - SMTP and FTP: [`Egress::resolve`] gives the checked addresses, which are
//!   connected to directly, the host name kept for TLS.
//!
//! Proxies are not used: through a proxy the worker would resolve and check
//! the proxy's address, never the destination's.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use url::Url;

use super::network_policy::{Denial, NetworkPolicy};
use super::retry::Verdict;
use crate::validation::FieldError;

/// A destination's host: a name, or an address in any form the URL standard
/// reads (`2130706433`, `0x7f000001` and `0177.0.0.1` are all 127.0.0.1).
pub type Host = url::Host<String>;

/// A name that takes longer than this to resolve counts as not resolving.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects a webhook request follows at most (as reqwest's default policy).
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The policy refuses the address: retrying cannot help until the
    /// destination or the policy changes.
    #[error("address {address} of host {host} is {denial}")]
    Refused {
        host: String,
        address: IpAddr,
        denial: Denial,
    },
    #[error("cannot resolve host {host}: {reason}")]
    Unresolved { host: String, reason: String },
}

impl EgressError {
    /// How a delivery attempt that met this error ends.
    pub fn verdict(&self) -> Verdict {
        match self {
            Self::Refused { .. } => Verdict::Permanent,
            Self::Unresolved { .. } => Verdict::Retryable,
        }
    }

    /// A policy refusal among an error's causes: the HTTP clients wrap what
    /// their resolver or redirect policy returned several layers deep.
    pub fn refusal_in<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a EgressError> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found @ EgressError::Refused { .. }) = error.downcast_ref::<EgressError>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
}

/// Whether `text` holds a control character (CR, LF, NUL, ...) or white
/// space, which no host, URL or header name may: they split protocol lines
/// (SMTP commands, HTTP headers), and URL parsing silently drops some of them.
pub fn has_control_or_space(text: &str) -> bool {
    text.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// A configured host (`config.host`): a name or an address, IPv6 with or
/// without brackets; `None` when it is neither.
pub fn parse_host(text: &str) -> Option<Host> {
    if text.is_empty() || has_control_or_space(text) {
        return None;
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(address) = bare.parse::<Ipv6Addr>() {
        return Some(Host::Ipv6(address));
    }
    Host::parse(text).ok()
}

/// What is wrong with a destination's `config.host`, if anything.
pub fn host_problem(text: &str) -> Option<FieldError> {
    if text.trim().is_empty() {
        Some(FieldError::new("config.host", "required"))
    } else if parse_host(text).is_none() {
        Some(FieldError::new(
            "config.host",
            "a host name or IP address, without spaces or control characters",
        ))
    } else {
        None
    }
}

/// The host as TLS names it (SNI and certificate check): an IPv6 address
/// without brackets, a name in its ASCII form.
pub fn server_name(host: &Host) -> String {
    match host {
        Host::Domain(name) => name.clone(),
        Host::Ipv4(address) => address.to_string(),
        Host::Ipv6(address) => address.to_string(),
    }
}

/// The policy and the clients built to obey it; cheap to clone.
#[derive(Clone)]
pub struct Egress {
    policy: Arc<NetworkPolicy>,
    /// Webhook requests: resolves through the policy, checks each redirect.
    http: reqwest::Client,
    /// The S3 SDK's HTTP client: resolves through the policy.
    s3_http: SharedHttpClient,
}

impl Egress {
    pub fn new(policy: NetworkPolicy, user_agent: &str) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .redirect(redirect_policy(policy.clone()))
            .build()?;
        let s3_http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_with_resolver(PolicyResolver(policy.clone()));
        Ok(Self {
            policy,
            http,
            s3_http,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn s3_http(&self) -> SharedHttpClient {
        self.s3_http.clone()
    }

    /// Checks a URL whose host is a literal address: the HTTP clients connect
    /// to those without asking their resolver. A name passes here; the
    /// resolver checks what it resolves to.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        check_url(&self.policy, url)
    }

    /// The allowed addresses of `host` to connect to, in the resolver's
    /// order; an error when there are none.
    pub async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let address = match host {
            Host::Domain(name) => return resolve_name(&self.policy, name, port).await,
            Host::Ipv4(address) => IpAddr::V4(*address),
            Host::Ipv6(address) => IpAddr::V6(*address),
        };
        check(&self.policy, &server_name(host), address)?;
        Ok(vec![SocketAddr::new(address, port)])
    }

    /// The check made when a destination is created or changed: a literal
    /// address, or any address a name resolves to now, that the policy
    /// refuses. A name that does not resolve now passes, since it may by the
    /// time it is used; every connection is checked anyway.
    pub async fn vet(&self, host: &Host, port: u16) -> Result<(), EgressError> {
        let Host::Domain(name) = host else {
            return self.resolve(host, port).await.map(drop);
        };
        let Ok(found) = lookup(name, port).await else {
            return Ok(());
        };
        found
            .iter()
            .try_for_each(|address| check(&self.policy, name, address.ip()))
    }
}

fn check(policy: &NetworkPolicy, host: &str, address: IpAddr) -> Result<(), EgressError> {
    policy
        .check(address)
        .map_err(|denial| EgressError::Refused {
            host: host.to_owned(),
            address,
            denial,
        })
}

fn check_url(policy: &NetworkPolicy, url: &Url) -> Result<(), EgressError> {
    let address = match url.host() {
        Some(url::Host::Ipv4(address)) => IpAddr::V4(address),
        Some(url::Host::Ipv6(address)) => IpAddr::V6(address),
        _ => return Ok(()),
    };
    check(policy, url.host_str().unwrap_or_default(), address)
}

async fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
    let unresolved = |reason: String| EgressError::Unresolved {
        host: name.to_owned(),
        reason,
    };
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                Err(unresolved("no address".to_owned()))
            } else {
                Ok(found)
            }
        }
        Ok(Err(error)) => Err(unresolved(error.to_string())),
        Err(_) => Err(unresolved(format!(
            "no answer within {} s",
            RESOLVE_TIMEOUT.as_secs()
        ))),
    }
}

/// Resolves `name` and keeps the allowed addresses; with none left, the
/// refusal of the first one.
async fn resolve_name(
    policy: &NetworkPolicy,
    name: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, EgressError> {
    let mut refusal = None;
    let mut allowed = Vec::new();
    for address in lookup(name, port).await? {
        match check(policy, name, address.ip()) {
            Ok(()) => allowed.push(address),
            Err(refused) => {
                tracing::warn!(host = name, address = %address.ip(), "Not connecting a delivery to a refused address");
                refusal.get_or_insert(refused);
            }
        }
    }
    match (allowed.is_empty(), refusal) {
        (true, Some(refused)) => Err(refused),
        _ => Ok(allowed),
    }
}

/// Resolves names for reqwest and the S3 SDK, keeping only the addresses the
/// policy allows.
#[derive(Debug, Clone)]
struct PolicyResolver(Arc<NetworkPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let allowed = resolve_name(&policy, name.as_str(), 0).await?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl ResolveDns for PolicyResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            resolve_name(&self.0, name, 0)
                .await
                .map(|allowed| allowed.iter().map(SocketAddr::ip).collect())
                .map_err(ResolveDnsError::new)
        })
    }
}

/// Follows redirects as reqwest would, except to a literal address the
/// policy refuses (a name goes through the resolver, like the first request).
fn redirect_policy(policy: Arc<NetworkPolicy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_url(&policy, attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// The certificates a server may chain to: the configured CA, or the web roots.
pub fn trust_roots(ca_certificate: Option<&str>) -> Result<RootCertStore, String> {
    let Some(pem) = ca_certificate else {
        return Ok(RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        ));
    };
    let mut store = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate.map_err(|error| format!("not a PEM certificate: {error}"))?;
        store
            .add(certificate)
            .map_err(|error| format!("not a usable CA certificate: {error}"))?;
    }
    if store.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(store)
}

/// A TLS client trusting `ca_certificate` (PEM), or the web roots without one.
pub fn tls_client(ca_certificate: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let roots = trust_roots(ca_certificate)?;
    let client = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn hosts_are_read_in_every_form_an_address_takes() {
        let loopback = Some(Host::Ipv4(Ipv4Addr::LOCALHOST));
        for text in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
        ] {
            assert_eq!(parse_host(text), loopback, "{text}");
        }
        for text in ["::1", "[::1]"] {
            assert_eq!(parse_host(text), Some(Host::Ipv6(Ipv6Addr::LOCALHOST)));
        }
        assert_eq!(
            parse_host("SMTP.Example.com"),
            Some(Host::Domain("smtp.example.com".to_owned()))
        );
    }

    #[test]
    fn control_characters_and_spaces_are_no_host() {
        for text in [
            "",
            "smtp.example.com\r\nRCPT TO:<x@y>",
            "smtp.example.com\n",
            "smtp\0.example.com",
            "smtp.example.com\t",
            "smtp example.com",
            "a/b",
            "user@host",
        ] {
            assert_eq!(parse_host(text), None, "{text:?}");
        }
    }

    #[test]
    fn tls_names_a_host_without_brackets() {
        assert_eq!(server_name(&parse_host("[::1]").unwrap()), "::1");
        assert_eq!(server_name(&parse_host("Mail.test").unwrap()), "mail.test");
    }

    #[tokio::test]
    async fn literal_addresses_are_checked_without_a_lookup() {
        let egress = Egress::new(NetworkPolicy::new(vec![], vec![], false), "test").unwrap();
        let refused = egress
            .resolve(&parse_host("0x7f000001").unwrap(), 25)
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "address 127.0.0.1 of host 127.0.0.1 is a loopback address (delivery.allow_loopback is false)"
        );
        assert_eq!(refused.verdict(), Verdict::Permanent);
        let url = Url::parse("http://[::ffff:127.0.0.1]:8080/").unwrap();
        assert!(egress.check_url(&url).is_err());
        let url = Url::parse("http://example.test/").unwrap();
        assert!(egress.check_url(&url).is_ok(), "names are the resolver's");
    }

    #[tokio::test]
    async fn a_name_resolving_to_refused_addresses_only_is_refused() {
        let egress = Egress::new(NetworkPolicy::new(vec![], vec![], false), "test").unwrap();
        let host = Host::Domain("localhost".to_owned());
        let refused = egress.resolve(&host, 25).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("of host localhost is a loopback"),
            "{refused}"
        );
        assert!(egress.vet(&host, 25).await.is_err());
        let allowed = Egress::new(NetworkPolicy::new(vec![], vec![], true), "test").unwrap();
        assert!(!allowed.resolve(&host, 25).await.unwrap().is_empty());
        assert!(allowed.vet(&host, 25).await.is_ok());
    }

    #[test]
    fn a_refusal_is_found_among_the_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] EgressError);
        let wrapped = Wrapper(EgressError::Refused {
            host: "x".to_owned(),
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            denial: Denial::Loopback,
        });
        assert!(EgressError::refusal_in(&wrapped).is_some());
        let unresolved = Wrapper(EgressError::Unresolved {
            host: "x".to_owned(),
            reason: "no".to_owned(),
        });
        assert!(EgressError::refusal_in(&unresolved).is_none());
    }
}
