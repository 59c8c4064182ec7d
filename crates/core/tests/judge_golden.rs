//! The judge's statistics against reference values computed independently with scipy/numpy
//! (`tests/golden/judge_golden.py`, which writes `tests/golden/judge_golden.json`).

use canary_core::judge::count::{CountEProcess, HALF_POINTS, LOG_RATIO_STEP};
use canary_core::judge::dispersion::GroupDispersion;
use canary_core::judge::dkw::{dkw_radius, quantile_buckets};
use canary_core::judge::tail::tail_threshold;
use canary_core::latency::LATENCY_BUCKETS;
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/judge_golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn assert_close(name: &str, got: f64, want: f64) {
    let tolerance = 1e-9 * want.abs().max(1.0);
    assert!((got - want).abs() <= tolerance, "{name}: got {got}, reference {want}");
}

fn f(value: &Value) -> f64 {
    value.as_f64().expect("number")
}

#[test]
fn the_grid_matches_the_reference() {
    let golden = golden();
    assert_eq!(f(&golden["grid"]["step"]), LOG_RATIO_STEP);
    assert_eq!(golden["grid"]["halfPoints"].as_u64(), Some(HALF_POINTS as u64));
}

#[test]
fn count_e_process_matches_the_binomial_likelihood_mixture() {
    let golden = golden();
    let cases = golden["count"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for (index, case) in cases.iter().enumerate() {
        let mut process = CountEProcess::new(f(&case["priorScale"]));
        for tick in case["ticks"].as_array().unwrap() {
            let tick = tick.as_array().unwrap();
            process.observe(tick[0].as_u64().unwrap(), tick[1].as_u64().unwrap(), f(&tick[2]));
        }
        let dispersion = f(&case["dispersion"]);
        assert_close(&format!("case {index} one-sided"), process.log_e_value(dispersion), f(&case["logEValue"]));
        assert_close(
            &format!("case {index} two-sided"),
            process.two_sided_log_e_value(dispersion),
            f(&case["twoSidedLogEValue"]),
        );
        let interval = process.confidence_interval(f(&case["alpha"]), dispersion);
        for (name, got, want) in [("lower", interval.lower, &case["lower"]), ("upper", interval.upper, &case["upper"])]
        {
            match (got, want.as_f64()) {
                (Some(got), Some(want)) => assert_close(&format!("case {index} {name}"), got, want),
                (None, None) => {}
                other => panic!("case {index} {name}: got/reference {other:?}"),
            }
        }
    }
}

#[test]
fn dispersion_matches_the_cluster_robust_reference() {
    let golden = golden();
    for (index, case) in golden["dispersion"].as_array().unwrap().iter().enumerate() {
        let canary = case["canary"].as_array().unwrap();
        let stable = case["stable"].as_array().unwrap();
        let shares: Vec<f64> = case["shares"].as_array().unwrap().iter().map(f).collect();
        let mut dispersion = GroupDispersion::new(canary.len());
        for (group, (c, s)) in canary.iter().zip(stable).enumerate() {
            let (c, s) = (c.as_array().unwrap(), s.as_array().unwrap());
            for (tick, &share) in shares.iter().enumerate() {
                dispersion.observe(group, c[tick].as_u64().unwrap(), s[tick].as_u64().unwrap(), share);
            }
        }
        assert_close(&format!("case {index} estimate"), dispersion.estimate(), f(&case["estimate"]));
        assert_close(&format!("case {index} factor"), dispersion.factor(), f(&case["factor"]));
    }
}

#[test]
fn dkw_radius_matches_howard_and_ramdas() {
    let golden = golden();
    for case in golden["dkw"].as_array().unwrap() {
        let (samples, alpha) = (f(&case["samples"]), f(&case["alpha"]));
        assert_close(&format!("n={samples} α={alpha}"), dkw_radius(samples, alpha), f(&case["radius"]));
    }
}

#[test]
fn tail_threshold_and_quantile_buckets_match() {
    let golden = golden();
    for (index, case) in golden["histograms"].as_array().unwrap().iter().enumerate() {
        let mut histogram = [0u64; LATENCY_BUCKETS];
        for (slot, value) in histogram.iter_mut().zip(case["histogram"].as_array().unwrap()) {
            *slot = value.as_u64().unwrap();
        }
        let threshold = tail_threshold(&histogram, 0.99).unwrap();
        assert_eq!(Some(threshold.bucket as u64), case["tailBucket"].as_u64(), "case {index}");
        assert_close(&format!("case {index} share"), threshold.stable_share, f(&case["tailShare"]));
        for bounds in case["quantileBuckets"].as_array().unwrap() {
            let got = quantile_buckets(&histogram, f(&bounds["quantile"]), f(&bounds["radius"]));
            assert_eq!(Some(got.lower as u64), bounds["lower"].as_u64(), "case {index} {bounds}");
            assert_eq!(Some(got.upper as u64), bounds["upper"].as_u64(), "case {index} {bounds}");
        }
    }
}
