//! Which addresses a delivery may connect to: the defence against server-side
//! request forgery. A destination is configured by a tenant, so without this
//! any tenant could make the worker call the cloud metadata service
//! (169.254.169.254), the worker's own API, or anything else on its private
//! network, and read the answer back through the delivery's logs.
//!
//! The rule, for every address a destination's host is or resolves to:
//!
//! 1. an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as the IPv4
//!    address it maps, since connecting to it reaches that address;
//! 2. an address in `delivery.allowed_networks` is allowed;
//! 3. a loopback address (127.0.0.0/8, ::1) is allowed only when
//!    `delivery.allow_loopback` is true, whatever `denied_networks` says, so
//!    that replacing the deny list can never open the worker's own host;
//! 4. an address in `delivery.denied_networks` is refused;
//! 5. any other address is allowed.
//!
//! This type only judges addresses; `egress` applies it to names and
//! connections.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// A network in CIDR notation, as the configuration lists them. A bare
/// address is the network of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(IpNet);

impl Network {
    pub fn contains(&self, address: &IpAddr) -> bool {
        self.0.contains(address)
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(Self(IpNet::from(address)));
        }
        let network: IpNet = text.parse().map_err(|_| {
            format!("`{text}` is not a network in CIDR notation (such as 10.0.0.0/8 or fc00::/7)")
        })?;
        // A typo such as 10.0.0.1/8 would otherwise silently mean 10.0.0.0/8.
        if network.trunc() != network {
            return Err(format!(
                "`{text}` has bits set after its prefix; the network is {}",
                network.trunc()
            ));
        }
        Ok(Self(network))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why an address is refused. Each names the key that refuses it, so an
/// operator reading a delivery's failure knows what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("in a denied network (delivery.denied_networks: {0})")]
    DeniedNetwork(Network),
    #[error("a loopback address (delivery.allow_loopback is false)")]
    Loopback,
}

/// The delivery network policy; see the module documentation for the rule.
#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    /// Always allowed: the operator's exceptions to everything below.
    allowed: Vec<Network>,
    denied: Vec<Network>,
    /// Tests and local development deliver to receivers on loopback.
    allow_loopback: bool,
}

impl NetworkPolicy {
    pub fn new(allowed: Vec<Network>, denied: Vec<Network>, allow_loopback: bool) -> Self {
        Self {
            allowed,
            denied,
            allow_loopback,
        }
    }

    /// Whether a delivery may connect to `address`.
    pub fn check(&self, address: IpAddr) -> Result<(), Denial> {
        let address = address.to_canonical();
        if self
            .allowed
            .iter()
            .any(|network| network.contains(&address))
        {
            return Ok(());
        }
        if address.is_loopback() {
            return if self.allow_loopback {
                Ok(())
            } else {
                Err(Denial::Loopback)
            };
        }
        match self
            .denied
            .iter()
            .find(|network| network.contains(&address))
        {
            Some(network) => Err(Denial::DeniedNetwork(*network)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn networks(list: &[&str]) -> Vec<Network> {
        list.iter().map(|text| text.parse().unwrap()).collect()
    }

    fn default_policy(allow_loopback: bool) -> NetworkPolicy {
        let delivery = Config::defaults().delivery;
        NetworkPolicy::new(
            delivery.allowed_networks,
            delivery.denied_networks,
            allow_loopback,
        )
    }

    fn check(policy: &NetworkPolicy, address: &str) -> Result<(), Denial> {
        policy.check(address.parse().unwrap())
    }

    #[test]
    fn the_default_deny_list_refuses_internal_addresses() {
        let policy = default_policy(false);
        for address in [
            "169.254.169.254",
            "fe80::1",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "fd00:ec2::254",
            "fc00::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(
                matches!(check(&policy, address), Err(Denial::DeniedNetwork(_))),
                "{address}"
            );
        }
        for address in ["93.184.216.34", "172.32.0.1", "2606:4700::1111", "8.8.8.8"] {
            assert_eq!(check(&policy, address), Ok(()), "{address}");
        }
    }

    #[test]
    fn loopback_needs_allow_loopback_whatever_the_deny_list_says() {
        for address in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                check(&default_policy(false), address),
                Err(Denial::Loopback),
                "{address}"
            );
            assert_eq!(check(&default_policy(true), address), Ok(()), "{address}");
            let without_loopback_in_the_list = NetworkPolicy::new(vec![], vec![], false);
            assert_eq!(
                check(&without_loopback_in_the_list, address),
                Err(Denial::Loopback)
            );
        }
        // allow_loopback opens loopback only, not the other denied networks.
        assert!(check(&default_policy(true), "10.0.0.1").is_err());
        assert!(check(&default_policy(true), "0.0.0.0").is_err());
    }

    #[test]
    fn allowed_networks_win_over_the_deny_list_and_loopback() {
        let delivery = Config::defaults().delivery;
        let policy = NetworkPolicy::new(
            networks(&["10.1.0.0/16", "127.0.0.2", "fd12::/16"]),
            delivery.denied_networks,
            false,
        );
        assert_eq!(check(&policy, "10.1.2.3"), Ok(()));
        assert_eq!(check(&policy, "::ffff:10.1.2.3"), Ok(()));
        assert_eq!(check(&policy, "fd12::5"), Ok(()));
        assert_eq!(check(&policy, "127.0.0.2"), Ok(()));
        assert_eq!(check(&policy, "127.0.0.1"), Err(Denial::Loopback));
        assert_eq!(
            check(&policy, "10.2.0.1"),
            Err(Denial::DeniedNetwork("10.0.0.0/8".parse().unwrap()))
        );
    }

    #[test]
    fn networks_parse_strictly() {
        assert_eq!(
            "10.0.0.5".parse::<Network>().unwrap().to_string(),
            "10.0.0.5/32"
        );
        assert_eq!("::1".parse::<Network>().unwrap().to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("10.0.0.0/8x".parse::<Network>().is_err());
        assert!("example.com/8".parse::<Network>().is_err());
        let error = "10.0.0.1/8".parse::<Network>().unwrap_err();
        assert!(error.contains("10.0.0.0/8"), "{error}");
    }

    #[test]
    fn a_denial_names_the_key_to_change() {
        let policy = default_policy(false);
        let message = check(&policy, "10.0.0.5").unwrap_err().to_string();
        assert_eq!(
            message,
            "in a denied network (delivery.denied_networks: 10.0.0.0/8)"
        );
        let message = check(&policy, "127.0.0.1").unwrap_err().to_string();
        assert!(message.contains("delivery.allow_loopback"), "{message}");
    }
}
