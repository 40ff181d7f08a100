//! CI details from the environment variables the plugin captured (`ci_env`).
//!
//! Same rules as the original service: GitHub Actions, CircleCI, Bitbucket Pipelines,
//! Buildkite and Travis, tried in that order; the first that recognises the environment
//! wins. A recognised but inconsistent environment (e.g. a pull-request event whose ref is
//! not `refs/pull/N/merge`) yields no CI info rather than a wrong one.

use std::collections::HashMap;

use buildstats_schemas::CiInfo;
use serde_json::Value;

type Env = HashMap<String, Value>;

fn get<'a>(env: &'a Env, key: &str) -> Option<&'a str> {
    env.get(key).and_then(Value::as_str)
}

fn req<'a>(env: &'a Env, key: &str) -> Option<&'a str> {
    get(env, key).filter(|s| !s.is_empty())
}

fn num(env: &Env, key: &str) -> Option<i64> {
    match env.get(key)? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn url_with_prefix(url: Option<&str>, prefix: &str) -> Option<String> {
    url.filter(|u| u.starts_with(prefix)).map(str::to_string)
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

/// Derive CI info, or `None` for a local build or an unparseable CI environment.
pub fn ci_info(env: Option<&Env>) -> Option<CiInfo> {
    let env = env.filter(|e| !e.is_empty())?;
    github_actions(env)
        .or_else(|| circleci(env))
        .or_else(|| bitbucket(env))
        .or_else(|| buildkite(env))
        .or_else(|| travis(env))
}

fn github_actions(env: &Env) -> Option<CiInfo> {
    if get(env, "GITHUB_ACTIONS") != Some("true") {
        return None;
    }
    let git_ref = req(env, "GITHUB_REF")?;
    let (run_type, pull_request, ref_name) = if get(env, "GITHUB_EVENT_NAME") == Some("pull_request") {
        let pr = git_ref.strip_prefix("refs/pull/")?.strip_suffix("/merge")?.parse::<i64>().ok()?;
        ("pull_request", Some(pr), get(env, "GITHUB_HEAD_REF")?.to_string())
    } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        ("branch", None, branch.to_string())
    } else {
        ("tag", None, git_ref.strip_prefix("refs/tags/")?.to_string())
    };
    let build_url = match (req(env, "GITHUB_SERVER_URL"), req(env, "GITHUB_REPOSITORY"), req(env, "GITHUB_RUN_ID")) {
        (Some(server), Some(repo), Some(run)) => Some(format!("{server}/{repo}/actions/runs/{run}")),
        _ => None,
    };
    let job_name = match (req(env, "GITHUB_WORKFLOW"), req(env, "GITHUB_JOB")) {
        (Some(workflow), Some(job)) => format!("{workflow} [{job}]"),
        (Some(one), None) | (None, Some(one)) => one.to_string(),
        (None, None) => "N/A".to_string(),
    };
    Some(CiInfo {
        provider: "github_actions".into(),
        run_type: run_type.into(),
        pull_request,
        job_name: Some(job_name),
        build_num: num(env, "GITHUB_RUN_NUMBER"),
        build_url,
        ref_name: Some(ref_name),
        username: non_empty(get(env, "GITHUB_ACTOR")),
        sha1: non_empty(get(env, "GITHUB_SHA")),
    })
}

fn circleci(env: &Env) -> Option<CiInfo> {
    req(env, "CIRCLECI")?;
    let (run_type, pull_request, username) = match num(env, "CIRCLE_PR_NUMBER") {
        Some(pr) => ("pull_request", Some(pr), get(env, "CIRCLE_PR_USERNAME")),
        None => ("branch", None, get(env, "CIRCLE_USERNAME")),
    };
    Some(CiInfo {
        provider: "circleci".into(),
        run_type: run_type.into(),
        pull_request,
        job_name: non_empty(get(env, "CIRCLE_JOB")),
        build_num: num(env, "CIRCLE_BUILD_NUM"),
        build_url: url_with_prefix(get(env, "CIRCLE_BUILD_URL"), "https://circleci.com/"),
        ref_name: non_empty(get(env, "CIRCLE_BRANCH")),
        username: non_empty(username),
        sha1: non_empty(get(env, "CIRCLE_SHA1")),
    })
}

fn bitbucket(env: &Env) -> Option<CiInfo> {
    let commit = req(env, "BITBUCKET_COMMIT")?;
    let (run_type, pull_request, ref_name) = if let Some(tag) = get(env, "BITBUCKET_TAG") {
        ("tag", None, tag)
    } else {
        let branch = get(env, "BITBUCKET_BRANCH")?;
        match num(env, "BITBUCKET_PR_ID") {
            Some(pr) => ("pull_request", Some(pr), branch),
            None => ("branch", None, branch),
        }
    };
    let build_url = match (req(env, "BITBUCKET_REPO_FULL_NAME"), req(env, "BITBUCKET_BUILD_NUMBER"), req(env, "BITBUCKET_STEP_UUID")) {
        (Some(repo), Some(build), Some(step)) => Some(format!(
            "https://bitbucket.org/{repo}/addon/pipelines/home#!/results/{build}/steps/{}",
            percent_encode_component(step)
        )),
        _ => None,
    };
    Some(CiInfo {
        provider: "bitbucket".into(),
        run_type: run_type.into(),
        pull_request,
        job_name: Some("Bitbucket pipeline job".into()),
        build_num: num(env, "BITBUCKET_BUILD_NUMBER"),
        build_url,
        ref_name: Some(ref_name.to_string()),
        username: None, // Bitbucket does not name the actor in the environment
        sha1: Some(commit.to_string()),
    })
}

fn buildkite(env: &Env) -> Option<CiInfo> {
    if get(env, "BUILDKITE") != Some("true") {
        return None;
    }
    let (run_type, pull_request) = match get(env, "BUILDKITE_PULL_REQUEST") {
        None | Some("false") | Some("") => ("branch", None),
        Some(pr) => ("pull_request", Some(pr.parse::<i64>().ok()?)),
    };
    let build_url = match (req(env, "BUILDKITE_BUILD_URL"), req(env, "BUILDKITE_JOB_ID")) {
        (Some(url), Some(job)) => url_with_prefix(Some(&format!("{url}#{job}")), "https://buildkite.com/"),
        _ => None,
    };
    Some(CiInfo {
        provider: "buildkite".into(),
        run_type: run_type.into(),
        pull_request,
        job_name: non_empty(get(env, "BUILDKITE_LABEL")),
        build_num: num(env, "BUILDKITE_BUILD_NUMBER"),
        build_url,
        ref_name: non_empty(get(env, "BUILDKITE_BRANCH")),
        username: None, // Buildkite does not name the actor in the environment
        sha1: non_empty(get(env, "BUILDKITE_COMMIT")),
    })
}

fn travis(env: &Env) -> Option<CiInfo> {
    if get(env, "TRAVIS") != Some("true") {
        return None;
    }
    let (run_type, pull_request, username, branch) = match get(env, "TRAVIS_PULL_REQUEST") {
        None | Some("false") => ("branch", None, None, get(env, "TRAVIS_BRANCH")),
        Some(pr) => {
            let pr = pr.parse::<i64>().ok()?;
            let owner = get(env, "TRAVIS_REPO_SLUG").and_then(|s| s.split('/').next());
            let author = get(env, "TRAVIS_PULL_REQUEST_SLUG").and_then(|s| s.split('/').next());
            // A PR from a branch of the same repo names the repo owner, not a person.
            let username = author.filter(|a| Some(*a) != owner);
            ("pull_request", Some(pr), username, get(env, "TRAVIS_PULL_REQUEST_BRANCH"))
        }
    };
    Some(CiInfo {
        provider: "travis".into(),
        run_type: run_type.into(),
        pull_request,
        job_name: non_empty(get(env, "TRAVIS_JOB_NAME")),
        build_num: num(env, "TRAVIS_BUILD_NUMBER"),
        build_url: url_with_prefix(get(env, "TRAVIS_BUILD_WEB_URL"), "https://travis-ci.com/"),
        ref_name: non_empty(branch),
        username: non_empty(username),
        sha1: non_empty(get(env, "TRAVIS_COMMIT")),
    })
}

/// Percent-encode everything but unreserved characters (RFC 3986), as a URL path component.
fn percent_encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Env {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pants-runs");
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        let env = value.get("ci_env").cloned().unwrap_or(value);
        serde_json::from_value(env).unwrap()
    }

    #[test]
    fn github_actions_pull_request_branch_and_tag() {
        let pr = ci_info(Some(&fixture("github_actions_pr_env.json"))).unwrap();
        assert_eq!((pr.provider.as_str(), pr.run_type.as_str(), pr.pull_request), ("github_actions", "pull_request", Some(7011)));
        assert_eq!(pr.ref_name.as_deref(), Some("seinfeld"));
        assert_eq!(pr.username.as_deref(), Some("asherf"));
        assert_eq!(pr.job_name.as_deref(), Some("Remote Execution Tests [integration-tests]"));
        assert_eq!(pr.build_num, Some(539));
        assert_eq!(pr.build_url.as_deref(), Some("https://github.com/toolchainlabs/toolchain/actions/runs/564395592"));

        let branch = ci_info(Some(&fixture("github_actions_branch_env.json"))).unwrap();
        assert_eq!((branch.run_type.as_str(), branch.pull_request), ("branch", None));
        let tag = ci_info(Some(&fixture("github_actions_tag_env.json"))).unwrap();
        assert_eq!(tag.run_type, "tag");
        assert!(ci_info(Some(&fixture("github_actions_pr_invalid_ref_env.json"))).is_none());
    }

    /// The original service stored its own derivation next to some fixtures: agree with it.
    #[test]
    fn circleci_matches_the_original_derivation() {
        for name in ["ci_build_pr_final_1.json", "ci_build_branch_final_1.json", "ci_build_pr_start_1.json"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pants-runs");
            let doc: Value = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
            let expected = &doc["ci_info"];
            let got = ci_info(Some(&fixture(name))).unwrap();
            assert_eq!(got.provider, "circleci");
            assert_eq!(got.run_type, expected["run_type"].as_str().unwrap(), "{name}");
            assert_eq!(got.pull_request, expected["pull_request"].as_i64(), "{name}");
            assert_eq!(got.username.as_deref(), expected["username"].as_str(), "{name}");
            assert_eq!(got.job_name.as_deref(), expected["job_name"].as_str(), "{name}");
            assert_eq!(got.build_num, expected["build_num"].as_i64(), "{name}");
            assert_eq!(got.build_url.as_deref(), expected["build_url"].as_str(), "{name}");
            assert_eq!(got.sha1.as_deref(), expected["sha1"].as_str(), "{name}");
            assert_eq!(got.ref_name.as_deref(), expected["branch"].as_str(), "{name}");
        }
    }

    #[test]
    fn circleci_bitbucket_buildkite_travis() {
        let c = ci_info(Some(&fixture("circleci_pull_request_env.json"))).unwrap();
        assert_eq!((c.run_type.as_str(), c.pull_request, c.username.as_deref()), ("pull_request", Some(6470), Some("asherf")));

        let b = ci_info(Some(&fixture("bitbucket_pr_env.json"))).unwrap();
        assert_eq!((b.provider.as_str(), b.run_type.as_str(), b.pull_request), ("bitbucket", "pull_request", Some(8)));
        assert_eq!(b.ref_name.as_deref(), Some("jerry"));
        assert!(b.build_url.unwrap().contains("/results/22/steps/%7B8ba1cdd9-6e43-444e-8630-19e4e073c675%7D"));
        assert_eq!(ci_info(Some(&fixture("bitbucket_tag_env.json"))).unwrap().run_type, "tag");
        assert_eq!(ci_info(Some(&fixture("bitbucket_branch_env.json"))).unwrap().run_type, "branch");

        let bk = ci_info(Some(&fixture("buildkite_github_pull_request_lint_run.json"))).unwrap();
        assert_eq!((bk.provider.as_str(), bk.run_type.as_str()), ("buildkite", "pull_request"));
        assert!(bk.pull_request.is_some());
        let bkb = ci_info(Some(&fixture("buildkite_github_branch_lint_run.json"))).unwrap();
        assert_eq!(bkb.run_type, "branch");

        let t = ci_info(Some(&fixture("travis_pull_request_env.json"))).unwrap();
        assert_eq!((t.provider.as_str(), t.run_type.as_str()), ("travis", "pull_request"));
        assert!(t.pull_request.is_some());
        assert_eq!(ci_info(Some(&fixture("travis_branch_env.json"))).unwrap().run_type, "branch");
    }

    #[test]
    fn local_builds_have_no_ci_info() {
        assert!(ci_info(None).is_none());
        assert!(ci_info(Some(&Env::new())).is_none());
        let env: Env = serde_json::from_str(r#"{"HOME": "/home/me"}"#).unwrap();
        assert!(ci_info(Some(&env)).is_none());
    }
}
