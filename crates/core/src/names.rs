//! Names that travel in cookies, headers, metric labels and store keys.

/// Longest service, version or rollout name accepted.
pub const MAX_NAME: usize = 63;

/// Whether `b` may appear in a version name: ASCII letters, digits, `.`, `_` and `-`.
#[inline]
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Checks a version name (`v2`, `1.4.2`, `web-2024-11`).
pub fn check_version(name: &str) -> Result<(), String> {
    check(name, "version", true)
}

/// Checks a service name or rollout id: like a version, but without dots.
pub fn check_id(name: &str, what: &str) -> Result<(), String> {
    check(name, what, false)
}

fn check(name: &str, what: &str, dots: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("{what} name {name:?} must be 1 to {MAX_NAME} characters"));
    }
    let ok = name.bytes().all(|b| is_name_byte(b) && (dots || b != b'.'));
    if !ok {
        let allowed = if dots { "letters, digits, '.', '_' and '-'" } else { "letters, digits, '_' and '-'" };
        return Err(format!("{what} name {name:?} may only contain {allowed}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_may_have_dots_ids_may_not() {
        assert!(check_version("1.4.2").is_ok());
        assert!(check_id("1.4.2", "service").is_err());
        assert!(check_id("web_shop-2", "service").is_ok());
        assert!(check_version("").is_err());
        assert!(check_version("v 2").is_err());
        assert!(check_version(&"x".repeat(64)).is_err());
    }
}
