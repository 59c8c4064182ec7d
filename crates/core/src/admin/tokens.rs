//! The admin listener's bearer tokens and what each one allows.
//!
//! - the **admin** token (`[admin] token`) allows everything; without it the API is open to
//!   whoever reaches the listener (loopback only, by the config's rule);
//! - the **read** token (`[admin] read_token`, only beside an admin token) allows what changes
//!   nothing: `GET` endpoints and the live feed;
//! - the **metrics** token (`[admin] metrics_token`) guards `/metrics`, which the admin and read
//!   tokens also open; without it `/metrics` is open, for Prometheus.

/// What a caller may do on the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read: `GET` endpoints and the live feed.
    Read,
    /// Everything, state changes included.
    Admin,
}

impl Role {
    /// The name the dashboard's feed reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token was sent.
    Missing,
    /// A token was sent, and it is none of the configured ones.
    Wrong,
}

/// The configured tokens, as read from the config or its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Allows everything.
    pub admin: Option<String>,
    /// Allows reading.
    pub read: Option<String>,
    /// Allows `/metrics`.
    pub metrics: Option<String>,
}

impl Tokens {
    /// Whether the API needs a token at all.
    pub fn required(&self) -> bool {
        self.admin.is_some()
    }

    /// The role `given` (a bearer token, if any) has on the API.
    pub fn role(&self, given: Option<&str>) -> Result<Role, Refusal> {
        let Some(admin) = &self.admin else { return Ok(Role::Admin) };
        let given = given.ok_or(Refusal::Missing)?;
        if constant_time_eq(given.as_bytes(), admin.as_bytes()) {
            Ok(Role::Admin)
        } else if self.read.as_ref().is_some_and(|read| constant_time_eq(given.as_bytes(), read.as_bytes())) {
            Ok(Role::Read)
        } else {
            Err(Refusal::Wrong)
        }
    }

    /// Whether `given` opens `/metrics`: any token does when a metrics token is configured
    /// (the metrics, read or admin token), and no token is needed when it is not.
    pub fn opens_metrics(&self, given: Option<&str>) -> Result<(), Refusal> {
        let Some(metrics) = &self.metrics else { return Ok(()) };
        let given = given.ok_or(Refusal::Missing)?;
        let matches =
            |token: &Option<String>| token.as_ref().is_some_and(|t| constant_time_eq(given.as_bytes(), t.as_bytes()));
        if constant_time_eq(given.as_bytes(), metrics.as_bytes()) || matches(&self.admin) || matches(&self.read) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

/// Compares two secrets in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(admin: Option<&str>, read: Option<&str>, metrics: Option<&str>) -> Tokens {
        Tokens { admin: admin.map(Into::into), read: read.map(Into::into), metrics: metrics.map(Into::into) }
    }

    #[test]
    fn without_an_admin_token_everyone_is_admin() {
        assert_eq!(Tokens::default().role(None), Ok(Role::Admin));
        assert_eq!(Tokens::default().role(Some("anything")), Ok(Role::Admin));
        assert!(!Tokens::default().required());
    }

    #[test]
    fn the_admin_token_acts_and_the_read_token_reads() {
        let t = tokens(Some("admin-secret"), Some("read-secret"), Some("metrics-secret"));
        assert_eq!(t.role(Some("admin-secret")), Ok(Role::Admin));
        assert_eq!(t.role(Some("read-secret")), Ok(Role::Read));
        assert_eq!(t.role(Some("metrics-secret")), Err(Refusal::Wrong), "the metrics token opens no API");
        assert_eq!(t.role(Some("read-secre")), Err(Refusal::Wrong));
        assert_eq!(t.role(None), Err(Refusal::Missing));
    }

    #[test]
    fn metrics_take_any_configured_token_once_guarded() {
        assert_eq!(tokens(Some("a"), None, None).opens_metrics(None), Ok(()), "open without a metrics token");
        let t = tokens(Some("admin-secret"), Some("read-secret"), Some("metrics-secret"));
        for ok in ["admin-secret", "read-secret", "metrics-secret"] {
            assert_eq!(t.opens_metrics(Some(ok)), Ok(()), "{ok}");
        }
        assert_eq!(t.opens_metrics(Some("nope")), Err(Refusal::Wrong));
        assert_eq!(t.opens_metrics(None), Err(Refusal::Missing));
    }
}
