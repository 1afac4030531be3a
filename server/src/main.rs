//! The `eventbus` binary. All of it lives in [`eventbus_server::cli`].
fn main() -> anyhow::Result<()> {
    eventbus_server::cli::main()
}
