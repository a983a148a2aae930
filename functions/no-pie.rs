//! Build script of every Lambda function (each `functions/*/Cargo.toml` names it as `build`): links the function's
//! binary as a position-dependent executable on Linux/glibc targets. A PIE binary of this size carries ~46,000
//! relative relocations that the dynamic loader applies, touching each page they are on, before `main` runs:
//! ~0.5 ms of every cold start (crates/bench `cold-start`). The cost is the main binary's own address
//! randomisation (libraries, heap and stacks stay randomised), the default trade of Go binaries on Lambda; Rust code
//! here has no `unsafe` of its own. Only binaries are affected, so proc-macros, tests and the libraries are not.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=../no-pie.rs");
}
