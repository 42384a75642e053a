//! Installs what the baselines need, from the repository's own files, into
//! a cache under the cargo target directory: a Python virtualenv with
//! `benches/baselines/requirements.txt`, and `npm ci` of
//! `benches/baselines/package-lock.json`. Each is done again only when its
//! file changed.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Baselines {
    /// The virtualenv's interpreter.
    pub python: PathBuf,
    /// For `NODE_PATH`.
    pub node_modules: PathBuf,
    /// `benches/baselines/`.
    pub scripts: PathBuf,
    /// The versions that ran, for the report.
    pub versions: String,
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("{command:?} does not run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// True when `copy` holds what `original` holds (the install it stamps is
/// current).
fn is_current(original: &Path, copy: &Path) -> bool {
    match (std::fs::read(original), std::fs::read(copy)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn install() -> Result<Baselines, String> {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baselines");
    // `CARGO_TARGET_TMPDIR` is `target/tmp`.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("load-baselines");
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;

    let venv = cache.join("python");
    let python = venv.join("bin/python");
    let requirements = scripts.join("requirements.txt");
    let stamp = venv.join("requirements.txt");
    if !python.exists() {
        let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!("installing the Python baseline into {}", venv.display());
        run(Command::new(interpreter).args(["-m", "venv"]).arg(&venv))?;
    }
    if !is_current(&requirements, &stamp) {
        eprintln!("installing {}", requirements.display());
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements))?;
        std::fs::copy(&requirements, &stamp).map_err(|e| e.to_string())?;
    }

    let node = cache.join("node");
    std::fs::create_dir_all(&node).map_err(|e| e.to_string())?;
    let lock = scripts.join("package-lock.json");
    if !is_current(&lock, &node.join("package-lock.json")) || !node.join("node_modules").exists() {
        eprintln!("installing the node baseline into {}", node.display());
        std::fs::copy(scripts.join("package.json"), node.join("package.json"))
            .map_err(|e| e.to_string())?;
        std::fs::copy(&lock, node.join("package-lock.json")).map_err(|e| e.to_string())?;
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&node))?;
    }

    let python_version = run(Command::new(&python).arg("--version"))?;
    let pip = run(Command::new(&python).args([
        "-c",
        "from importlib.metadata import version as v; print(f\"pywebpush {v('pywebpush')}, paho-mqtt {v('paho-mqtt')}\")",
    ]))?;
    let node_version = run(Command::new("node").arg("--version"))?;
    let node_modules = node.join("node_modules");
    let version = |package: &str| {
        std::fs::read(node_modules.join(package).join("package.json"))
            .ok()
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .and_then(|json| json["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    let packages = format!("web-push {}, mqtt {}", version("web-push"), version("mqtt"));
    Ok(Baselines {
        python,
        node_modules,
        scripts,
        versions: format!("{pip} on {python_version}; {packages} on node {node_version}"),
    })
}
