pub fn run(_a: crate::cli::DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo: not built yet")
}
