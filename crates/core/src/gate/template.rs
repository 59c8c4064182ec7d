//! `{shard}` and `{shards}` in a gate's command.

/// `command` with `{shard}` and `{shards}` replaced; any other brace is the shell's.
pub fn expand(command: &str, shard: u32, shards: u32) -> String {
    command.replace("{shards}", &shards.to_string()).replace("{shard}", &shard.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_shard_placeholders_only() {
        assert_eq!(
            expand("npx playwright test --shard={shard}/{shards} && echo ${HOME} {}", 2, 3),
            "npx playwright test --shard=2/3 && echo ${HOME} {}"
        );
        assert_eq!(expand("run {shard}{shard}", 1, 1), "run 11");
    }
}
