//! Who the synthetic users are: their ids, which of them are error-prone, and how unequal
//! their activity is. The upstream and the load generator agree on this without talking: it
//! is all a function of the `x-user-id`.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the error-prone hash; any value independent of the gateway's bucket salt works.
const PRONE_SEED: u64 = 0x4A55_D6E5_0E77_0001;
const PRONE_RESOLUTION: u64 = 1_000_000;

/// Whether `user` is one of the error-prone users, a `share` (0–1) of all users.
pub fn is_error_prone(user: &str, share: f64) -> bool {
    let draw = xxh3_64_with_seed(user.as_bytes(), PRONE_SEED) % PRONE_RESOLUTION;
    (draw as f64) < share * PRONE_RESOLUTION as f64
}

/// The id of the user of activity rank `rank` (1 = the busiest) in a service's `cohort`.
///
/// Every cohort is a new set of people: new ids, so new buckets and new error-prone users.
pub fn user_id(service: &str, cohort: u64, rank: usize) -> String {
    format!("{service}-c{cohort}-u{rank}")
}

/// Share of all requests the busiest `top` of `users` send under Zipf activity `exponent`.
pub fn zipf_top_share(users: usize, exponent: f64, top: usize) -> f64 {
    let weight = |k: usize| (k as f64).powf(-exponent);
    let total: f64 = (1..=users).map(weight).sum();
    (1..=top.min(users)).map(weight).sum::<f64>() / total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> impl Iterator<Item = String> {
        (1..=n).map(|rank| user_id("svc-1", 1, rank))
    }

    #[test]
    fn about_the_asked_share_of_users_is_error_prone() {
        let prone = ids(100_000).filter(|id| is_error_prone(id, 0.03)).count();
        assert!((2_800..=3_200).contains(&prone), "{prone} of 100000");
        assert!(!ids(1000).any(|id| is_error_prone(&id, 0.0)));
        assert!(ids(1000).all(|id| is_error_prone(&id, 1.0)));
    }

    #[test]
    fn error_prone_users_are_not_the_canarys_more_often_than_others() {
        let salt = b"svc-1-18f3a";
        let canary = |id: &String| canary_core::bucket::bucket(salt, id.as_bytes()) < 1000;
        let prone: Vec<String> = ids(200_000).filter(|id| is_error_prone(id, 0.03)).collect();
        let share = prone.iter().filter(|id| canary(id)).count() as f64 / prone.len() as f64;
        assert!((0.085..=0.115).contains(&share), "{share}");
    }

    #[test]
    fn a_new_cohort_is_new_people() {
        assert_ne!(user_id("svc-1", 1, 7), user_id("svc-1", 2, 7));
        assert_ne!(user_id("svc-1", 1, 7), user_id("svc-2", 1, 7));
    }

    #[test]
    fn a_few_users_send_most_requests() {
        assert!(zipf_top_share(2000, 1.0, 100) > 0.6);
        assert!((zipf_top_share(2000, 0.0, 100) - 0.05).abs() < 1e-9);
    }
}
