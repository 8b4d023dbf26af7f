//! Sending webhooks: one signed JSON POST per attempt, with the SSRF guard. Unless an
//! endpoint is allowed private targets, a URL whose host is a private, loopback, link-local
//! (or otherwise non-public) address is refused, and so is a host name that resolves only to
//! such addresses: the check runs in the client's own resolver, at every attempt, on the very
//! addresses it then connects to (no window between check and use). Redirects are not
//! followed (a 3xx is the endpoint's answer).

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use satchel_core::webhooks::{SendOutcome, Sender};

use crate::http::UpstreamError;

/// Sends webhooks over HTTP(S); two pooled clients, guarded and not.
pub struct WebhookSender {
    guarded: reqwest::Client,
    open: reqwest::Client,
}

impl WebhookSender {
    /// `timeout`: one attempt's whole time.
    pub fn new(timeout: Duration) -> Result<Self, UpstreamError> {
        let build = |guard: bool| {
            let builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("Satchel-Webhooks/", env!("CARGO_PKG_VERSION")));
            if guard {
                builder.dns_resolver(Arc::new(PublicOnly)).build()
            } else {
                builder.build()
            }
        };
        Ok(Self {
            guarded: build(true)?,
            open: build(false)?,
        })
    }
}

#[async_trait]
impl Sender for WebhookSender {
    async fn send(
        &self,
        url: &str,
        allow_private_targets: bool,
        headers: &[(&'static str, String)],
        body: String,
    ) -> SendOutcome {
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => return refused(format!("the URL is not valid: {e}")),
        };
        let client = if allow_private_targets {
            &self.open
        } else {
            // An address in the URL is never resolved: check it here.
            if let Some(ip) = literal_ip(&parsed)
                && !is_public(ip)
            {
                return refused(format!(
                    "{ip} is a private, loopback or link-local address (allow_private_targets is off)"
                ));
            }
            &self.guarded
        };
        let mut request = client
            .post(parsed)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(response) => SendOutcome::Answered {
                status: response.status().as_u16(),
                retry_after: crate::http::retry_after(response.headers()),
            },
            Err(e) if refused_by_guard(&e) => refused(
                "the host resolves only to private, loopback or link-local addresses \
                 (allow_private_targets is off)"
                    .to_owned(),
            ),
            Err(e) => SendOutcome::Unreachable {
                error: describe(&e),
            },
        }
    }
}

fn refused(reason: String) -> SendOutcome {
    SendOutcome::Refused { reason }
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// A transport failure in words, without the URL's query (never a secret in logs).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the exchange failed"
    };
    let mut cause = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

/// Whether an address is one anyone on the internet could reach: not loopback, private,
/// link-local, carrier-grade NAT, unspecified, broadcast, multicast or documentation
/// space (IPv4-mapped IPv6 addresses judged as their IPv4 address).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
}

/// The guarded resolver: the system's answers, less every non-public address; none left is
/// an error the sender reports as a refusal.
struct PublicOnly;

#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to non-public addresses")]
struct NonPublicTarget(String);

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(NonPublicTarget(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

fn refused_by_guard(e: &reqwest::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<NonPublicTarget>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_targets_are_refused_unless_allowed() {
        let sender = WebhookSender::new(Duration::from_secs(5)).unwrap();
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/hook",
            "http://localhost:9/hook",
        ] {
            let outcome = sender.send(url, false, &[], "{}".into()).await;
            assert!(
                matches!(outcome, SendOutcome::Refused { .. }),
                "{url}: {outcome:?}"
            );
        }
        // Allowed: it is attempted (nothing listens on port 9, so unreachable, not refused).
        let outcome = sender
            .send("http://127.0.0.1:9/hook", true, &[], "{}".into())
            .await;
        assert!(
            matches!(outcome, SendOutcome::Unreachable { .. }),
            "{outcome:?}"
        );
    }
}
