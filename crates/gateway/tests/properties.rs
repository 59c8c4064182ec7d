//! Properties of cookie and key extraction over headers a client fully controls. Random inputs,
//! bounded: `PROPTEST_CASES` raises the count per property (CI runs proptest's default of 256).

use canary_gateway::request::{cookie, is_minted_uid};
use http::header::{COOKIE, HeaderMap, HeaderValue};
use proptest::prelude::*;

/// proptest's defaults, without failure files in the tree.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

/// A cookie pair's name or value as browsers send them: no `;`, `=`, spaces or quotes.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.!#$%&'*+^`|~-]{1,16}"
}

fn headers_with(lines: &[Vec<u8>]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
        }
    }
    headers
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_cookie_headers_never_panic(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4), name in token()) {
        let headers = headers_with(&lines);
        if let Some(value) = cookie(&headers, &name) {
            prop_assert!(!value.is_empty());
            prop_assert!(!value.contains(&b';'), "a value never spans pairs");
        }
    }

    #[test]
    fn the_first_pair_of_a_name_is_found_among_any_others(
        before in prop::collection::vec((token(), token()), 0..6),
        after in prop::collection::vec((token(), token()), 0..6),
        name in token(),
        value in token(),
        quoted in any::<bool>(),
        spaces in " {0,2}",
    ) {
        let others = |pairs: &[(String, String)]| -> Vec<String> {
            pairs.iter().filter(|(n, _)| *n != name).map(|(n, v)| format!("{n}={v}")).collect()
        };
        let shown = if quoted { format!("\"{value}\"") } else { value.clone() };
        let mut pairs = others(&before);
        pairs.push(format!("{spaces}{name}{spaces}={spaces}{shown}{spaces}"));
        pairs.extend(others(&after));
        pairs.push(format!("{name}=a-later-duplicate"));
        let headers = headers_with(&[pairs.join(";").into_bytes()]);
        prop_assert_eq!(cookie(&headers, &name), Some(value.as_bytes()));
    }

    #[test]
    fn a_name_that_is_only_a_suffix_or_prefix_is_not_matched(name in "[a-z]{2,8}", value in token()) {
        let headers = headers_with(&[format!("x{name}={value}; {name}x={value}").into_bytes()]);
        prop_assert_eq!(cookie(&headers, &name), None);
    }

    #[test]
    fn only_32_lower_hex_digits_are_a_minted_uid(uid in prop::collection::vec(any::<u8>(), 0..40)) {
        let looks_minted = uid.len() == 32 && uid.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        prop_assert_eq!(is_minted_uid(&uid), looks_minted);
    }
}
