//! Which names the admin listener answers to, and which pages may act on it.
//!
//! A browser on the operator's machine can reach a loopback admin listener, so two attacks need
//! no token: DNS rebinding (a page on `evil.example` re-resolves its own name to `127.0.0.1` and
//! reads the API as same-origin; the request still says `Host: evil.example`) and cross-site
//! requests (a page on another site posts a form to `http://127.0.0.1:7070/...`; its `Origin`
//! names the other site). The rules: a request's `Host` must be an allowed name, and a request
//! that changes state (or opens the live feed) from a browser must come from one of the admin's
//! own origins: an allowed host at the port the request was sent to.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Names every admin listener answers to, whatever its configuration.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// One entry of `[admin] allowed_hosts`: a DNS name or an IP address, without scheme or port.
/// Kept lower-case, IPv6 addresses in brackets (`[2001:db8::1]`), as they appear in `Host`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl TryFrom<String> for HostName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bare = s.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(&s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(HostName(host_of_ip(ip)));
        }
        let name = s.strip_suffix('.').unwrap_or(&s).to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() <= 253 && name.split('.').all(label_ok) {
            Ok(HostName(name))
        } else {
            Err(format!(
                "allowed host {s:?} must be a DNS name or an IP address, without scheme, port or path \
                 (like \"canary.example.com\" or \"10.0.0.5\")"
            ))
        }
    }
}

impl From<HostName> for String {
    fn from(h: HostName) -> String {
        h.0
    }
}

impl HostName {
    /// The name as `Host` carries it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The host names the admin listener answers to: the loopback names, the listen address's own
/// host (unless it is `0.0.0.0` or `[::]`, which no client can name) and `[admin] allowed_hosts`.
/// Any port goes with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl Default for AllowedHosts {
    /// The loopback names only.
    fn default() -> Self {
        AllowedHosts { names: LOOPBACK_NAMES.iter().map(|n| (*n).to_owned()).collect() }
    }
}

impl AllowedHosts {
    /// The names a listener on `listen` answers to, with the configured `extra` names.
    pub fn new(listen: SocketAddr, extra: &[HostName]) -> AllowedHosts {
        let mut hosts = AllowedHosts::default();
        if !listen.ip().is_unspecified() {
            hosts.add(host_of_ip(listen.ip()));
        }
        for name in extra {
            hosts.add(name.as_str().to_owned());
        }
        hosts
    }

    fn add(&mut self, name: String) {
        if !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    /// The names, loopback first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) names this listener.
    pub fn allows(&self, host: &str) -> bool {
        split_authority(host).is_some_and(|(name, _)| self.allows_name(name))
    }

    fn allows_name(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether `origin` (an `Origin` header value) is one of the admin's own origins for a
    /// request sent with `Host: host`: `http` or `https`, an allowed host, and the port the
    /// request was sent to (a missing port is the scheme's default on both sides). A page on
    /// another port of the same machine is another origin; `null` is nobody's.
    pub fn is_own_origin(&self, origin: &str, host: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else { return false };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let (Some((origin_name, origin_port)), Some((_, host_port))) =
            (split_authority(authority), split_authority(host))
        else {
            return false;
        };
        self.allows_name(origin_name)
            && self.allows(host)
            && origin_port.unwrap_or(default_port) == host_port.unwrap_or(default_port)
    }
}

/// Whether a `Sec-Fetch-Site` value says a page of another site (or another subdomain of the
/// same site) made the request. `same-origin` and `none` (typed by the user) are not.
pub fn is_foreign_fetch(sec_fetch_site: &str) -> bool {
    let value = sec_fetch_site.trim();
    value.eq_ignore_ascii_case("cross-site") || value.eq_ignore_ascii_case("same-site")
}

/// `host[:port]` or `[v6][:port]` split into the host (brackets kept) and the port; `None` when
/// it is not an authority (empty host, a bad port, user info or a path).
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(':') && !host.starts_with('[') {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, extra: &[&str]) -> AllowedHosts {
        let extra: Vec<HostName> = extra.iter().map(|h| HostName::try_from(h.to_string()).unwrap()).collect();
        AllowedHosts::new(listen.parse().unwrap(), &extra)
    }

    #[test]
    fn loopback_names_are_allowed_with_any_port() {
        let h = hosts("127.0.0.1:7070", &[]);
        for ok in ["localhost", "localhost:7070", "LOCALHOST:1", "127.0.0.1:7070", "[::1]:7070", "[::1]", "localhost."]
        {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:7070", "127.0.0.2:7070", "", "localhost:99999", "a@localhost", "::1"]
        {
            assert!(!h.allows(bad), "{bad}");
        }
    }

    #[test]
    fn the_listen_address_and_configured_names_are_allowed() {
        let h = hosts("10.0.0.5:7070", &["Canary.Example.com", "2001:db8::1"]);
        assert!(h.allows("10.0.0.5:7070"));
        assert!(h.allows("canary.example.com"));
        assert!(h.allows("[2001:db8::1]:7070"));
        assert!(!h.allows("example.com"));
        let any = hosts("0.0.0.0:7070", &[]);
        assert!(!any.allows("0.0.0.0:7070"), "an unspecified address is no client's name");
        assert_eq!(any.names(), ["localhost", "127.0.0.1", "[::1]"]);
    }

    #[test]
    fn bad_allowed_hosts_are_refused() {
        for bad in ["http://x.example", "x.example:80", "x.example/path", "", "-x.example", "a..b", "*.example"] {
            assert!(HostName::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert_eq!(HostName::try_from("[::1]".to_owned()).unwrap().as_str(), "[::1]");
        assert_eq!(HostName::try_from("Admin.Example.".to_owned()).unwrap().as_str(), "admin.example");
    }

    #[test]
    fn own_origins_are_allowed_hosts_at_the_request_s_port() {
        let h = hosts("127.0.0.1:7070", &["canary.example.com"]);
        assert!(h.is_own_origin("http://127.0.0.1:7070", "127.0.0.1:7070"));
        assert!(h.is_own_origin("http://localhost:7070", "127.0.0.1:7070"));
        assert!(h.is_own_origin("https://canary.example.com", "canary.example.com"));
        assert!(h.is_own_origin("https://canary.example.com", "canary.example.com:443"));
        assert!(!h.is_own_origin("http://localhost:3000", "localhost:7070"), "another port is another origin");
        assert!(!h.is_own_origin("http://evil.example:7070", "127.0.0.1:7070"));
        assert!(!h.is_own_origin("http://evil.example", "evil.example"), "a rebound name is not ours");
        assert!(!h.is_own_origin("null", "127.0.0.1:7070"));
        assert!(!h.is_own_origin("file://", "127.0.0.1:7070"));
        assert!(!h.is_own_origin("https://canary.example.com", "127.0.0.1:7070"), "443 is not 7070");
    }

    #[test]
    fn pages_of_other_sites_are_foreign_fetches() {
        assert!(is_foreign_fetch("cross-site"));
        assert!(is_foreign_fetch("same-site"));
        assert!(!is_foreign_fetch("same-origin"));
        assert!(!is_foreign_fetch("none"));
    }
}
