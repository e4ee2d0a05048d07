//! The supported Node versions the Node suites run on, as installed by
//! scripts/test.sh from npm's `node` package into target/node-MAJOR.

use super::*;

/// The Node majors the Node suites run on (CI installs each from npm, the
/// `node` package, into target/node-MAJOR: see scripts/test.sh).
pub const NODE_MAJORS: [u32; 2] = [22, 24];

/// One installed Node: its major and the directory of its `node` binary.
#[derive(Clone, Debug)]
pub struct NodeVersion {
    pub major: u32,
    pub bin_dir: PathBuf,
}

impl NodeVersion {
    /// `PATH` with this Node's directory first, for pminit's command.
    pub fn path_env(&self) -> (String, String) {
        let rest = std::env::var("PATH").unwrap_or_default();
        ("PATH".into(), format!("{}:{rest}", self.bin_dir.display()))
    }

    /// The `node` binary itself.
    pub fn node(&self) -> PathBuf {
        self.bin_dir.join("node")
    }
}

/// The supported Node versions installed here, each checked to report its
/// major. A missing one is a loud skip (a failure under
/// PMINIT_TEST_STRICT).
pub fn node_versions(test: &str) -> Vec<NodeVersion> {
    static FOUND: OnceLock<Vec<(u32, Option<PathBuf>)>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        NODE_MAJORS
            .iter()
            .map(|&major| {
                let dir: PathBuf = [
                    env!("CARGO_MANIFEST_DIR"),
                    "target",
                    &format!("node-{major}"),
                    "node_modules",
                    "node",
                    "bin",
                ]
                .iter()
                .collect();
                let ok = Command::new(dir.join("node"))
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).starts_with(&format!("v{major}."))
                    });
                (major, ok.then_some(dir))
            })
            .collect()
    });
    found
        .iter()
        .filter_map(|(major, dir)| {
            let what = format!("Node {major} in target/node-{major} (scripts/test.sh installs it)");
            let dir = dir.clone();
            require(dir.is_some(), test, &what).then(|| NodeVersion {
                major: *major,
                bin_dir: dir.unwrap_or_default(),
            })
        })
        .collect()
}
