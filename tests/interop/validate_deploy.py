"""Validates the files under deploy/ (driven by tests/integration/deploy.rs).

Usage: validate_deploy.py REPO OUT_DIR

- every *.yaml / *.yml parses;
- every Kubernetes manifest validates, strictly (unknown fields are errors), against the
  Kubernetes JSON schemas that kubernetes-validate bundles (no network);
- the Compose file parses with compose-spec (a strict Compose specification parser), and its
  cross-references hold: network_mode service:X and depends_on name services, bind-mount
  sources and build contexts exist;
- each ConfigMap's config.toml is written to OUT_DIR/<configmap>.toml for `hoptrace check`.

Prints one line per file checked; exits 1 with every problem listed.
"""

import pathlib
import sys

import kubernetes_validate
import yaml
from compose_spec import PyCompose

KUBERNETES_VERSION = "1.33.0"


def main() -> int:
    repo = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    deploy = repo / "deploy"
    problems = []
    files = sorted(p for p in deploy.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        problems.append("no YAML files under deploy/")
    for path in files:
        rel = path.relative_to(repo)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as err:
            problems.append(f"{rel}: {err}")
            continue
        print(f"{rel}: {len(docs)} YAML documents")
        if path.parent.name == "kubernetes":
            problems += kubernetes(rel, docs, out)
        if path.name in ("docker-compose.yml", "compose.yaml"):
            problems += compose(rel, path, docs)
    for problem in problems:
        print(f"PROBLEM {problem}")
    return 1 if problems else 0


def kubernetes(rel, docs, out):
    problems = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            print(f"{rel}: {name} valid (Kubernetes {KUBERNETES_VERSION}, strict)")
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{rel}: {name}: {path}: {err.message}")
        except Exception as err:  # unknown kind or version: still a problem to report
            problems.append(f"{rel}: {name}: {err}")
        if doc.get("kind") == "ConfigMap" and "config.toml" in doc.get("data", {}):
            target = out / f"{doc['metadata']['name']}.toml"
            target.write_text(doc["data"]["config.toml"])
            print(f"{rel}: {name} config.toml -> {target}")
    return problems


def compose(rel, path, docs):
    problems = []
    try:
        parsed = PyCompose.from_yaml(path.read_text())
    except Exception as err:
        return [f"{rel}: {err}"]
    services = set(parsed.service_names())
    print(f"{rel}: valid Compose file, services {sorted(services)}")
    for name, service in docs[0].get("services", {}).items():
        mode = service.get("network_mode", "")
        if mode.startswith("service:") and mode[len("service:"):] not in services:
            problems.append(f"{rel}: services.{name}.network_mode: no service {mode[8:]!r}")
        for dep in service.get("depends_on", []):
            if dep not in services:
                problems.append(f"{rel}: services.{name}.depends_on: no service {dep!r}")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                if not (path.parent / source).exists():
                    problems.append(f"{rel}: services.{name}.volumes: {source} does not exist")
        build = service.get("build")
        if isinstance(build, dict):
            context = path.parent / build.get("context", ".")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{rel}: services.{name}.build: {dockerfile} does not exist")
    return problems


if __name__ == "__main__":
    sys.exit(main())
