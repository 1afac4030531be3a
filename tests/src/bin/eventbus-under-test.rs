//! The `eventbus` CLI, built inside this package so tests can spawn it.
fn main() -> anyhow::Result<()> {
    eventbus_server::cli::main()
}
