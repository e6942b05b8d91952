//! Tests of loading: the file, the environment over it, and the checks, through the public
//! `Config::load_from` and `Config::parse`.

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = Config::parse("max_boxes = 3\nmax_boxen = 4\n")
        .err()
        .unwrap_or_default();
    assert!(err.contains("max_boxen"), "{err}");
    let err = Config::parse("[box]\nmemroy_mb = 1\n")
        .err()
        .unwrap_or_default();
    assert!(err.contains("memroy_mb"), "{err}");
}

#[test]
fn environment_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("clawpen.toml");
    std::fs::write(
        &file,
        "max_boxes = 3\nprovider = \"echo\"\n[box]\npids = 64\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Config::load_from(Some(&file), &env(&[("CLAWPEN_MAX_BOXES", "7")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.max_boxes, Some(7));
    assert_eq!(config.limits.pids, 64);
    assert_eq!(config.idle_timeout_secs, 900);
}

#[test]
fn the_warm_pool_defaults_to_two_and_the_environment_sets_or_disables_it() {
    let config = Config::load_from(None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.warm_pool, 2);
    let file = Config::parse("warm_pool = 5\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.warm_pool, 5);
    let off = Config::load_from(None, &env(&[("CLAWPEN_WARM_POOL", "0")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(off.warm_pool, 0);
}

#[test]
fn bad_values_are_named() {
    let err = Config::load_from(None, &env(&[("CLAWPEN_MAX_BOXES", "lots")]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("CLAWPEN_MAX_BOXES"), "{err}");
    let err = Config::load_from(None, &env(&[("CLAWPEN_MAX_BOXES", "0")]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("max_boxes"), "{err}");
}

#[test]
fn tunnel_settings_have_defaults_and_env_overrides() {
    let config = Config::load_from(None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.anthropic_base_url, "https://api.anthropic.com");
    assert_eq!(config.openai_base_url, "https://api.openai.com/v1");
    assert_eq!(config.requests_per_minute, 30);
    assert_eq!(config.tokens_per_day, 2_000_000);
    assert_eq!(config.web_fetch_max_kb, 2048);
    assert_eq!(config.web_fetch_timeout_secs, 20);
    assert!(config.web_fetch_allow.is_empty());
    assert_eq!(config.box_model(), None);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("clawpen.toml");
    std::fs::write(
        &file,
        "provider = \"anthropic\"\nrequests_per_minute = 5\n\
         web_fetch_allow = [\"example.com\", \"*.example.org\", \"127.0.0.1:8080\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Config::load_from(Some(&file), &env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.requests_per_minute, 5);
    assert_eq!(config.web_fetch_allow.len(), 3);
    assert_eq!(config.box_model().as_deref(), Some("claude-sonnet-4-5"));

    let config = Config::load_from(
        Some(&file),
        &env(&[
            ("CLAWPEN_PROVIDER", "openai"),
            ("CLAWPEN_MODEL", "gpt-4.1"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9000"),
            ("OPENAI_BASE_URL", "https://llm.example/v1"),
            ("CLAWPEN_REQUESTS_PER_MINUTE", "7"),
            ("CLAWPEN_TOKENS_PER_DAY", "0"),
            ("CLAWPEN_WEB_FETCH_ALLOW", "a.example, *.b.example"),
            ("CLAWPEN_WEB_FETCH_MAX_KB", "64"),
            ("CLAWPEN_WEB_FETCH_TIMEOUT_SECS", "5"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.box_model().as_deref(), Some("gpt-4.1"));
    assert_eq!(config.anthropic_base_url, "http://127.0.0.1:9000");
    assert_eq!(config.openai_base_url, "https://llm.example/v1");
    assert_eq!((config.requests_per_minute, config.tokens_per_day), (7, 0));
    assert_eq!(config.web_fetch_allow, ["a.example", "*.b.example"]);
    assert_eq!(
        (config.web_fetch_max_kb, config.web_fetch_timeout_secs),
        (64, 5)
    );
}

#[test]
fn bad_tunnel_settings_are_named() {
    let error = |pairs: &[(&str, &str)]| {
        Config::load_from(None, &env(pairs))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    for (var, value, key) in [
        (
            "ANTHROPIC_BASE_URL",
            "api.anthropic.com",
            "anthropic_base_url",
        ),
        (
            "ANTHROPIC_BASE_URL",
            "ftp://x.example",
            "anthropic_base_url",
        ),
        (
            "OPENAI_BASE_URL",
            "https://u:p@x.example/v1",
            "openai_base_url",
        ),
        (
            "OPENAI_BASE_URL",
            "https://x.example/v1?k=1",
            "openai_base_url",
        ),
        (
            "CLAWPEN_WEB_FETCH_ALLOW",
            "http://x.example/",
            "web_fetch_allow",
        ),
        ("CLAWPEN_WEB_FETCH_MAX_KB", "0", "web_fetch_max_kb"),
        ("CLAWPEN_TOKENS_PER_DAY", "-1", "CLAWPEN_TOKENS_PER_DAY"),
    ] {
        let err = error(&[(var, value)]);
        assert!(err.contains(key), "{var}={value}: {err}");
    }
    let err = Config::parse("web_fetch_alow = []")
        .err()
        .unwrap_or_default();
    assert!(err.contains("web_fetch_alow"), "{err}");
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let config = Config::load_from(
        None,
        &env(&[
            ("ANTHROPIC_API_KEY", "sk-ant-very-secret"),
            ("TELEGRAM_BOT_TOKEN", "123:abc"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("very-secret") && !shown.contains("123:abc"),
        "{shown}"
    );
    assert_eq!(config.secrets().len(), 2);
}

#[test]
fn telegram_settings_come_from_their_table_and_the_environment() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("clawpen.toml");
    std::fs::write(
        &file,
        "[telegram]\ntoken = \"1:file\"\nallowed_users = [1]\ntrigger = \"claw\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Config::load_from(
        Some(&file),
        &env(&[
            ("CLAWPEN_TELEGRAM_ALLOWED_USERS", "2"),
            ("TELEGRAM_API_URL", "http://127.0.0.1:9"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let telegram = telegram_of(&config);
    assert_eq!(telegram.token.as_deref(), Some("1:file"));
    assert_eq!(telegram.allowed_users, [1, 2]);
    assert_eq!(telegram.api_url, "http://127.0.0.1:9");
    assert_eq!(
        config.secrets().len(),
        1,
        "the table's token is a secret too"
    );
    assert!(!format!("{config:?}").contains("1:file"));

    // The top-level key and its variable keep working; without a token, no adapter.
    let legacy =
        Config::parse("telegram_bot_token = \"2:top\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(telegram_of(&legacy).token.as_deref(), Some("2:top"));
    let from_env = Config::load_from(None, &env(&[("TELEGRAM_BOT_TOKEN", "3:env")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(telegram_of(&from_env).token.as_deref(), Some("3:env"));
    let none = Config::load_from(None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(telegram_of(&none).token, None);
    assert!(none.adapters.build().is_ok_and(|built| built.is_empty()));
    let err = Config::parse("[telegram]\ntokn = \"x\"\n")
        .err()
        .unwrap_or_default();
    assert!(err.contains("tokn"), "{err}");
    let err = Config::load_from(None, &env(&[("CLAWPEN_TELEGRAM_ALLOWED_CHATS", "x")]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("CLAWPEN_TELEGRAM_ALLOWED_CHATS"), "{err}");
}

/// The Telegram adapter's settings as its registration read them.
fn telegram_of(config: &Config) -> clawpen_adapters::telegram::TelegramConfig {
    config
        .adapters
        .get("telegram")
        .and_then(|s| {
            s.as_any()
                .downcast_ref::<clawpen_adapters::telegram::TelegramConfig>()
        })
        .cloned()
        .unwrap_or_else(|| panic!("no telegram settings"))
}

#[test]
fn a_bad_value_in_the_file_may_be_corrected_by_the_environment() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("clawpen.toml");
    std::fs::write(
        &file,
        "[telegram]
api_url = \"ftp://nowhere\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = Config::load_from(Some(&file), &env(&[]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("telegram.api_url"), "{err}");
    let fixed = Config::load_from(
        Some(&file),
        &env(&[("TELEGRAM_API_URL", "http://127.0.0.1:9")]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(telegram_of(&fixed).api_url, "http://127.0.0.1:9");
}

#[test]
fn unknown_clawpen_variables_are_named() {
    let vars = env(&[
        ("CLAWPEN_MAX_BOXES", "3"),
        ("CLAWPEN_MAX_BOXEN", "3"),
        ("CLAWPEN_TELEGRAM_TRIGGER", "claw"),
        ("HOME", "/root"),
    ]);
    assert_eq!(
        unknown_env_vars(&vars),
        vec!["CLAWPEN_MAX_BOXEN".to_string()]
    );
}

#[test]
fn the_metrics_endpoint_is_off_unless_an_address_is_given() {
    let off = Config::load_from(None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(off.metrics.listen, None);
    let file =
        Config::parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        file.metrics.listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9464")
    );
    let err = Config::parse("[metrics]\nlisen = \"127.0.0.1:9464\"\n")
        .err()
        .unwrap_or_default();
    assert!(err.contains("lisen"), "{err}");
    let from_env = Config::load_from(None, &env(&[("CLAWPEN_METRICS_LISTEN", "[::1]:9000")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        from_env.metrics.listen.map(|a| a.port()),
        Some(9000),
        "the variable sets it"
    );
    let err = Config::load_from(None, &env(&[("CLAWPEN_METRICS_LISTEN", "9464")]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("CLAWPEN_METRICS_LISTEN"), "{err}");
}

#[test]
fn box_workspace_quota_and_seccomp_are_read_from_the_file() {
    let config = Config::parse("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.limits.workspace_mb, 2048);
    assert_eq!(config.limits.seccomp, super::SeccompChoice::Clawpen);
    let config = Config::parse("[box]\nworkspace_mb = 5\nseccomp = \"engine\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.limits.workspace_mb, 5);
    assert_eq!(config.limits.seccomp, super::SeccompChoice::Engine);
    let err = Config::parse("[box]\nseccomp = \"off\"\n")
        .err()
        .unwrap_or_default();
    assert!(err.contains("clawpen") && err.contains("engine"), "{err}");
}
