//! `judge-harness spin`: a CPU-hungry neighbour. Its threads busy-loop until stdin closes, so
//! it never outlives the harness that started it (which also kills it by PID).

use std::io::Read;

use crate::cli::SpinArgs;

/// Burns `threads` cores until stdin closes.
pub fn spin(args: &SpinArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=64).contains(&args.threads), "--threads must be between 1 and 64");
    for _ in 0..args.threads {
        std::thread::spawn(burn);
    }
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

fn burn() {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}
