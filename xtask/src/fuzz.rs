//! `cargo xtask fuzz [--time SECS] [--write-seeds] [TARGET...]`: builds the
//! coverage-guided fuzz targets of `fuzz/` with cargo fuzz (libFuzzer) and
//! runs each for SECS seconds (default [`CI_SECONDS`], the tier `cargo xtask
//! test` runs). Fails if any target crashes, with the input saved under
//! `fuzz/artifacts/<target>/` and the command that replays it.
//!
//! * cargo-fuzz is installed from crates.io ([`CARGO_FUZZ_VERSION`]) when
//!   missing. It needs nightly flags: on a stable toolchain they are allowed
//!   with `RUSTC_BOOTSTRAP=1`.
//! * No sanitizer (`--sanitizer none`): the decoders are safe Rust, the stable
//!   toolchain ships no sanitizer runtime, and ASan would only slow the runs.
//!   Debug assertions and overflow checks are on (`-a`), so an arithmetic
//!   overflow is a crash.
//! * The build and the growing corpus live outside the work tree, under
//!   `$CARGO_TARGET_DIR/fuzz` (`target/fuzz` by default); each run starts from
//!   that corpus plus the committed seeds in `fuzz/seeds/<target>/`.
//! * The targets link the `librocksdb.a` that the workspace's debug build
//!   already compiled (`ROCKSDB_LIB_DIR`), instead of compiling RocksDB's C++
//!   a second time: that saves minutes and ~3 GB of objects per build. The
//!   decoders never call RocksDB; it is linked only because `eventbus-log`
//!   depends on it.
//! * `--write-seeds` regenerates `fuzz/seeds/` from the real encoders (each
//!   target's `seeds()`), then stops.
//!
//! Per target it prints executions, coverage (libFuzzer's `cov`: covered
//! edges; `ft`: features), corpus size and peak RSS.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::{cargo, root, run, target_dir};

/// Seconds per target in CI (`cargo xtask test`).
pub const CI_SECONDS: u64 = 15;
/// The cargo-fuzz release `cargo xtask fuzz` installs.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The target triple cargo fuzz builds for (its default on this platform).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

struct Args {
    seconds: u64,
    write_seeds: bool,
    targets: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        seconds: CI_SECONDS,
        write_seeds: false,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--time" => {
                let v = it.next().context("--time needs a number of seconds")?;
                parsed.seconds = v
                    .parse()
                    .with_context(|| format!("--time {v:?} is not a number of seconds"))?;
                ensure!(parsed.seconds > 0, "--time must be at least 1 second");
            }
            "--write-seeds" => parsed.write_seeds = true,
            flag if flag.starts_with('-') => {
                bail!("usage: cargo xtask fuzz [--time SECS] [--write-seeds] [TARGET...]")
            }
            target => parsed.targets.push(target.to_string()),
        }
    }
    Ok(parsed)
}

/// Entry point of the `fuzz` task.
pub fn main(args: &[String]) -> Result<()> {
    let args = parse_args(args)?;
    let all = targets()?;
    let targets = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            ensure!(all.contains(t), "no fuzz target {t:?}; there are {all:?}");
        }
        args.targets
    };
    install_cargo_fuzz()?;
    let started = Instant::now();
    build()?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.write_seeds {
        return targets.iter().try_for_each(|t| write_seeds(t));
    }
    let mut stats = Vec::new();
    for target in &targets {
        stats.push(run_target(target, args.seconds)?);
    }
    print_summary(&stats);
    eprintln!(
        "xtask: fuzzing passed ({} targets, {} s each, {:.0} s in all with the build)",
        stats.len(),
        args.seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The targets: one file per target in `fuzz/fuzz_targets/`, as cargo fuzz
/// lays them out.
fn targets() -> Result<Vec<String>> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path.file_stem().context("file name")?;
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn install_cargo_fuzz() -> Result<()> {
    let installed = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["fuzz", "--version"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} from crates.io");
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// Where cargo fuzz builds, and where the corpus grows: outside the work tree.
fn fuzz_dir() -> PathBuf {
    target_dir().join("fuzz")
}

fn binary(target: &str) -> PathBuf {
    fuzz_dir().join(TRIPLE).join("release").join(target)
}

fn build() -> Result<()> {
    let rocksdb = workspace_rocksdb_dir()?;
    run(cargo()
        .env("RUSTC_BOOTSTRAP", "1")
        .env("ROCKSDB_LIB_DIR", &rocksdb)
        .env("ROCKSDB_STATIC", "1")
        .args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"])
        .arg("--target-dir")
        .arg(fuzz_dir()))
}

/// A directory holding a `librocksdb.a` of the workspace's debug build, of
/// the librocksdb-sys version `fuzz/Cargo.lock` pins. Every build of one
/// version compiles the same C++ with the same flags (only the Rust side of
/// its build script differs between package selections), so any of them
/// will do; the newest is taken. Without one, builds the workspace as
/// `cargo xtask test` does (another package selection would compile RocksDB
/// once more, for a build-script hash of its own).
fn workspace_rocksdb_dir() -> Result<PathBuf> {
    let version = locked_version("librocksdb-sys")?;
    if let Some(dir) = find_rocksdb_lib(&version)? {
        return Ok(dir);
    }
    crate::build_workspace()?;
    find_rocksdb_lib(&version)?.with_context(|| {
        format!(
            "no librocksdb.a of librocksdb-sys {version} under {}",
            target_dir().display()
        )
    })
}

/// The version of `package` in `fuzz/Cargo.lock`.
fn locked_version(package: &str) -> Result<String> {
    let lock = std::fs::read_to_string(root().join("fuzz/Cargo.lock"))?;
    let entry = format!("name = \"{package}\"\nversion = \"");
    let at = lock
        .find(&entry)
        .with_context(|| format!("fuzz/Cargo.lock has no {package}"))?;
    let rest = &lock[at + entry.len()..];
    Ok(rest[..rest.find('"').context("unterminated version")?].to_string())
}

fn find_rocksdb_lib(version: &str) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(target_dir().join("debug/build")) else {
        return Ok(None);
    };
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries {
        let dir = entry?.path();
        let lib = dir.join("out/librocksdb.a");
        // The build script's output names the crate's source directory,
        // which carries the version.
        let of_version = std::fs::read_to_string(dir.join("output"))
            .is_ok_and(|o| o.contains(&format!("librocksdb-sys-{version}\n")));
        let Ok(modified) = lib.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if of_version && newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, dir.join("out")));
        }
    }
    Ok(newest.map(|(_, dir)| dir))
}

fn write_seeds(target: &str) -> Result<()> {
    let dir = root().join("fuzz/seeds").join(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    run(Command::new(binary(target))
        .env("EVENTBUS_FUZZ_WRITE_SEEDS", &dir)
        .arg("-runs=0"))?;
    eprintln!("xtask: wrote the seeds of {target} to {}", dir.display());
    Ok(())
}

/// What one run reported.
struct Stats {
    target: String,
    execs: u64,
    execs_per_sec: u64,
    cov: u64,
    features: u64,
    corpus: u64,
    peak_rss_mb: u64,
}

fn run_target(target: &str, seconds: u64) -> Result<Stats> {
    let corpus = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let seeds = root().join("fuzz/seeds").join(target);
    let artifacts = root().join("fuzz/artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let mut cmd = Command::new(binary(target));
    // New inputs go to the first directory (outside the work tree); the
    // committed seeds are read only.
    cmd.arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        // A single input that takes seconds is a bug too (a hang).
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-max_len=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .current_dir(root())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", binary(target).display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        let crash = log
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("(no input saved)");
        bail!(
            "fuzz target {target} failed ({}); input: {crash}\n\
             replay: {} {crash}\n\
             then add the input as a regression test next to the decoder",
            out.status,
            binary(target).display()
        );
    }
    Ok(parse_stats(target, &log))
}

/// Reads libFuzzer's last status line (`#N DONE cov: .. ft: .. corp: ..`)
/// and its final `stat::` lines.
fn parse_stats(target: &str, log: &str) -> Stats {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = |name: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov:"))
        .unwrap_or("");
    Stats {
        target: target.to_string(),
        execs: stat("number_of_executed_units"),
        execs_per_sec: stat("average_exec_per_sec"),
        cov: field(last, "cov:"),
        features: field(last, "ft:"),
        corpus: field(last, "corp:"),
        peak_rss_mb: stat("peak_rss_mb"),
    }
}

fn print_summary(stats: &[Stats]) {
    println!(
        "{:<16} {:>12} {:>9} {:>7} {:>8} {:>7} {:>8}",
        "target", "execs", "execs/s", "cov", "ft", "corpus", "rss MB"
    );
    for s in stats {
        println!(
            "{:<16} {:>12} {:>9} {:>7} {:>8} {:>7} {:>8}",
            s.target, s.execs, s.execs_per_sec, s.cov, s.features, s.corpus, s.peak_rss_mb
        );
    }
    println!("crashes: 0");
}
