//! The Kubernetes manifests in k8s/: valid against a current Kubernetes
//! (`kubernetes-validate --strict`, from PyPI), and their numbers agree:
//! the grace period covers the preStop delay plus pminit's kill timeout
//! plus a margin; the probe and the hook are pminit itself; the pod runs
//! non-root on a read-only root filesystem.

mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The Kubernetes version the manifests are checked against.
const KUBERNETES: &str = "1.37.0";
/// What the grace period must leave beyond preStop and the kill timeout.
const MARGIN_SECS: f64 = 2.0;

fn manifests() -> Vec<PathBuf> {
    ["deployment.yaml", "service.yaml", "pdb.yaml"]
        .iter()
        .map(|f| [env!("CARGO_MANIFEST_DIR"), "k8s", f].iter().collect())
        .collect()
}

fn validator(test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    require(
        ok,
        test,
        "kubernetes-validate (pip install kubernetes-validate)",
    )
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(python())
        .args(["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_manifests_are_valid_kubernetes() {
    if !validator("the_manifests_are_valid_kubernetes") {
        return;
    }
    let files = manifests();
    let (ok, report) = validate(&files);
    assert!(ok, "{report}");
    assert_eq!(report.matches("passed").count(), files.len(), "{report}");
    // The check can fail: an unknown field in a copy is caught.
    let text = std::fs::read_to_string(&files[0]).expect("read");
    let broken = text.replacen(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: true\n            readOnlyEverything: true",
        1,
    );
    assert_ne!(text, broken);
    let copy = std::env::temp_dir().join(format!("pminit-k8s-{}.yaml", std::process::id()));
    std::fs::write(&copy, broken).expect("write");
    let (ok, report) = validate(std::slice::from_ref(&copy));
    let _ = std::fs::remove_file(&copy);
    assert!(!ok && report.contains("readOnlyEverything"), "{report}");
}

/// Every YAML document of the manifests, as JSON (PyYAML comes with
/// kubernetes-validate).
fn documents() -> Vec<Value> {
    let mut all = Vec::new();
    for f in manifests() {
        let out = Command::new(python())
            .args([
                "-c",
                "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(&f)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
        all.extend(docs);
    }
    all
}

/// Seconds in a pminit DURATION as the manifests write them ("5s", "8s",
/// "1500ms", "1500").
fn seconds(d: &str) -> f64 {
    if let Some(ms) = d.strip_suffix("ms") {
        ms.parse::<f64>().expect("ms") / 1000.0
    } else if let Some(s) = d.strip_suffix('s') {
        s.parse().expect("s")
    } else if let Some(m) = d.strip_suffix('m') {
        m.parse::<f64>().expect("m") * 60.0
    } else {
        d.parse::<f64>().expect("ms") / 1000.0
    }
}

#[test]
fn the_numbers_in_the_manifests_agree() {
    if !validator("the_numbers_in_the_manifests_agree") {
        return;
    }
    let docs = documents();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
            .clone()
    };
    let deploy = kind("Deployment");
    let service = kind("Service");
    let pdb = kind("PodDisruptionBudget");
    let pod = &deploy["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    let hook = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("preStop exec");
    assert_eq!(&hook[..3], &["/pminit", "prestop", "--delay"]);
    let delay = seconds(hook[3].as_str().expect("delay"));
    assert_eq!(
        c["readinessProbe"]["exec"]["command"],
        serde_json::json!(["/pminit", "ready"])
    );
    assert_eq!(c["command"][0], "/pminit");

    let env = |name: &str| {
        c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .and_then(|v| v["value"].as_str())
            .map(str::to_string)
    };
    // pminit's default kill timeout is 8s when the variable is not set.
    let kill = seconds(&env("PMINIT_KILL_TIMEOUT").unwrap_or_else(|| "8s".into()));
    let grace = pod["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("grace");
    assert!(
        grace >= delay + kill + MARGIN_SECS,
        "terminationGracePeriodSeconds {grace} < preStop {delay} + kill timeout {kill} + margin {MARGIN_SECS}"
    );

    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap_or(0) > 0);

    // The port: PORT for pminit, the container port, the Service's target.
    let port = env("PORT").expect("PORT");
    let ports = c["ports"].as_array().expect("ports");
    assert_eq!(
        ports[0]["containerPort"].as_u64().map(|p| p.to_string()),
        Some(port.clone())
    );
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(
        *target == ports[0]["name"]
            || target.as_u64().map(|p| p.to_string()).as_ref() == Some(&port)
    );
    assert!(
        port.parse::<u16>().expect("port") >= 1024,
        "non-root cannot bind below 1024"
    );

    // Selectors reach the pods.
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (what, selector) in [
        ("Deployment", &deploy["spec"]["selector"]["matchLabels"]),
        ("Service", &service["spec"]["selector"]),
        (
            "PodDisruptionBudget",
            &pdb["spec"]["selector"]["matchLabels"],
        ),
    ] {
        for (k, v) in selector.as_object().expect("selector") {
            assert_eq!(&labels[k], v, "{what} selector {k}");
        }
    }
    // The budget allows evicting at least one pod, or drains would hang.
    let replicas = deploy["spec"]["replicas"].as_u64().expect("replicas");
    let min = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
    assert!(
        min < replicas,
        "minAvailable {min} must be below replicas {replicas}"
    );
}
