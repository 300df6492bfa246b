//! Run on SQLite always, on PostgreSQL when `PAYHOST_TEST_POSTGRES_URL` is
//! set, and with Redis (L2 + pub/sub) when `PAYHOST_TEST_REDIS_URL` is set.

use std::collections::HashSet;
use std::future::Future;

use rand::RngCore;

use super::*;
use crate::store::Backend;
use crate::store::testing::{POSTGRES_URL_ENV, TestDb, each_backend_with_url, tenant};
use crate::tenancy::{
    ApiKeyId, IssuedApiKey, attach_domain, detach_domain, issue_api_key, move_domain,
    revoke_api_key, set_tenant_status,
};

/// Environment variable naming a Redis server for tests, e.g. `redis://127.0.0.1:6379`.
const REDIS_URL_ENV: &str = "PAYHOST_TEST_REDIS_URL";

/// Long enough that no test entry expires unless a test moves the clock.
const LONG_TTL: Duration = Duration::from_secs(3600);
/// How long a test waits for a broadcast to reach another instance.
const BROADCAST_DEADLINE: Duration = Duration::from_secs(10);

struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().expect("clock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().expect("clock")
    }
}

fn redis_url() -> Option<String> {
    std::env::var(REDIS_URL_ENV).ok().filter(|u| !u.is_empty())
}

/// Like `each_backend`, but also hands the test resolver options wired
/// for that database (the PostgreSQL URL for LISTEN), with a long TTL.
async fn each_database<F, Fut>(test: F)
where
    F: Fn(Store, ResolverOptions) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    each_backend_with_url(|store, url| {
        let opts = ResolverOptions {
            channel: test_channel(),
            ttl: LONG_TTL,
            ..ResolverOptions::default()
        }
        .with_database_url(&url);
        test(store, opts)
    })
    .await
}

fn random_domain() -> Domain {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    Domain::parse(&format!("shop-{}.example.com", hex::encode(bytes))).expect("domain")
}

async fn key(store: &Store, tenant: &TenantId) -> IssuedApiKey {
    issue_api_key(store, tenant, "test").await.expect("key")
}

fn resolved(tenant: &TenantId, key: &ApiKeyId, status: TenantStatus) -> ResolvedApiKey {
    ResolvedApiKey {
        tenant_id: tenant.clone(),
        key_id: key.clone(),
        tenant_status: status,
    }
}

/// Evaluates `$check` (which may `.await`) until it holds, failing the
/// test after `BROADCAST_DEADLINE`. A macro, not an async closure, so the
/// test futures stay `Send`.
macro_rules! eventually {
    ($what:expr, $check:expr) => {{
        let deadline = Instant::now() + BROADCAST_DEADLINE;
        loop {
            if $check {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {BROADCAST_DEADLINE:?} waiting for {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

#[tokio::test]
async fn a_cache_hit_makes_no_database_query() {
    each_database(|store, opts| async move {
        let t = tenant(&store, "Acme").await;
        let issued = key(&store, &t).await;
        let hash = issued.secret.hash();
        let d = random_domain();
        attach_domain(&store, &t, &d).await.expect("attach");
        let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
        let expected = resolved(&t, &issued.info.id, TenantStatus::Active);

        assert_eq!(resolver.db_queries(), 0);
        assert_eq!(
            resolver.resolve_api_key(&hash).await.expect("key"),
            Some(expected.clone())
        );
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(t.clone())
        );
        assert_eq!(
            resolver.resolve_tenant(&t).await.expect("tenant"),
            Some(TenantStatus::Active)
        );
        assert_eq!(resolver.db_queries(), 3, "each miss is one lookup");

        let upper_with_port = format!("{}:8443", d.as_str().to_ascii_uppercase());
        for _ in 0..3 {
            assert_eq!(
                resolver.resolve_api_key(&hash).await.expect("key"),
                Some(expected.clone())
            );
            assert_eq!(
                resolver.resolve_host(&upper_with_port).await.expect("host"),
                Some(t.clone()),
                "a Host header with case and port hits the same entry"
            );
            assert_eq!(
                resolver.resolve_tenant(&t).await.expect("tenant"),
                Some(TenantStatus::Active)
            );
        }
        assert_eq!(resolver.db_queries(), 3, "cache hits made a query");

        // Independent of the counter: with the pool closed, any query
        // fails, yet cached answers are still served.
        store.close().await;
        assert_eq!(
            resolver.resolve_api_key(&hash).await.expect("cached key"),
            Some(expected)
        );
        assert_eq!(
            resolver
                .resolve_host(d.as_str())
                .await
                .expect("cached host"),
            Some(t)
        );
        assert!(
            resolver
                .resolve_host(random_domain().as_str())
                .await
                .is_err(),
            "a miss must reach the (closed) database"
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_hosts_and_keys_are_negatively_cached_until_the_negative_ttl_ends() {
    each_database(|store, opts| async move {
        let clock = ManualClock::new();
        let opts = ResolverOptions {
            negative_ttl: Duration::from_secs(5),
            ..opts
        };
        let resolver =
            TenantResolver::with_clock(store.clone(), opts, clock.clone()).expect("resolver");
        let t = tenant(&store, "Late").await;
        let d = random_domain();

        assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
        assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
        assert_eq!(
            resolver.db_queries(),
            1,
            "the second miss was answered by the cache"
        );

        // Attached behind the cache's back (no invalidation): the
        // negative entry holds until it expires.
        attach_domain(&store, &t, &d).await.expect("attach");
        clock.advance(Duration::from_secs(4));
        assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
        assert_eq!(resolver.db_queries(), 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(t.clone())
        );
        assert_eq!(
            resolver.db_queries(),
            2,
            "an expired negative entry is looked up again"
        );

        // Positive entries live for the (longer) ttl, then are looked up again.
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(t.clone())
        );
        assert_eq!(resolver.db_queries(), 2);
        clock.advance(LONG_TTL);
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(t)
        );
        assert_eq!(resolver.db_queries(), 3);

        let unknown = ApiKeyHash::of("ph_not-a-key");
        assert_eq!(resolver.resolve_api_key(&unknown).await.expect("key"), None);
        assert_eq!(resolver.resolve_api_key(&unknown).await.expect("key"), None);
        assert_eq!(
            resolver.db_queries(),
            4,
            "unknown keys are negatively cached too"
        );

        assert_eq!(
            resolver.resolve_host("not a host!").await.expect("junk"),
            None
        );
        assert_eq!(
            resolver.db_queries(),
            4,
            "an unparsable host needs no lookup"
        );
    })
    .await;
}

#[tokio::test]
async fn attaching_a_negatively_cached_host_resolves_once_invalidated() {
    each_database(|store, opts| async move {
        let opts = ResolverOptions {
            negative_ttl: LONG_TTL,
            ..opts
        };
        let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
        let t = tenant(&store, "New shop").await;
        let d = random_domain();
        assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);

        let change = attach_domain(&store, &t, &d).await.expect("attach");
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            None,
            "still negatively cached before the invalidation"
        );
        resolver
            .invalidate_domain_change(&change)
            .await
            .expect("invalidate");
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(t)
        );
    })
    .await;
}

#[tokio::test]
async fn a_revoked_key_stops_resolving_once_invalidated() {
    each_database(|store, opts| async move {
        let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
        let t = tenant(&store, "Acme").await;
        let doomed = key(&store, &t).await;
        let kept = key(&store, &t).await;
        let doomed_hash = doomed.secret.hash();
        let kept_hash = kept.secret.hash();
        for hash in [&doomed_hash, &kept_hash] {
            assert!(resolver.resolve_api_key(hash).await.expect("key").is_some());
        }
        assert_eq!(resolver.db_queries(), 2);

        let revoked = revoke_api_key(&store, &t, &doomed.info.id)
            .await
            .expect("revoke")
            .expect("was active");
        assert_eq!(revoked.hash, doomed_hash);
        assert!(
            resolver
                .resolve_api_key(&doomed_hash)
                .await
                .expect("key")
                .is_some(),
            "the cache serves the key until it is told"
        );

        resolver
            .invalidate_api_key(&revoked.hash)
            .await
            .expect("invalidate");
        assert_eq!(
            resolver.resolve_api_key(&doomed_hash).await.expect("key"),
            None
        );
        assert_eq!(resolver.db_queries(), 3);
        assert_eq!(
            resolver.resolve_api_key(&kept_hash).await.expect("key"),
            Some(resolved(&t, &kept.info.id, TenantStatus::Active))
        );
        assert_eq!(resolver.db_queries(), 3, "other keys stay cached");
    })
    .await;
}

#[tokio::test]
async fn after_a_domain_move_or_detach_the_old_owner_no_longer_resolves() {
    each_database(|store, opts| async move {
        let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
        let old_owner = tenant(&store, "Old").await;
        let new_owner = tenant(&store, "New").await;
        let d = random_domain();
        attach_domain(&store, &old_owner, &d).await.expect("attach");
        let old_key = key(&store, &old_owner).await.secret.hash();
        let bystander = tenant(&store, "Bystander").await;
        let bystander_domain = random_domain();
        attach_domain(&store, &bystander, &bystander_domain)
            .await
            .expect("attach");

        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(old_owner.clone())
        );
        assert!(
            resolver
                .resolve_api_key(&old_key)
                .await
                .expect("key")
                .is_some()
        );
        assert!(
            resolver
                .resolve_host(bystander_domain.as_str())
                .await
                .expect("host")
                .is_some()
        );
        assert_eq!(resolver.db_queries(), 3);

        let moved = move_domain(&store, &d, &new_owner).await.expect("move");
        resolver
            .invalidate_domain_change(&moved)
            .await
            .expect("invalidate");
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(new_owner.clone())
        );
        assert!(
            resolver
                .resolve_api_key(&old_key)
                .await
                .expect("key")
                .is_some()
        );
        assert_eq!(
            resolver.db_queries(),
            5,
            "both owners' entries were dropped"
        );
        assert!(
            resolver
                .resolve_host(bystander_domain.as_str())
                .await
                .expect("host")
                .is_some()
        );
        assert_eq!(resolver.db_queries(), 5, "other tenants stay cached");

        let detached = detach_domain(&store, &new_owner, &d)
            .await
            .expect("detach")
            .expect("had it");
        resolver
            .invalidate_domain_change(&detached)
            .await
            .expect("invalidate");
        assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
    })
    .await;
}

#[tokio::test]
async fn invalidating_a_tenant_drops_every_key_of_that_tenant() {
    each_database(|store, opts| async move {
        let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
        let t = tenant(&store, "Suspect").await;
        let issued = key(&store, &t).await;
        let hash = issued.secret.hash();
        let d = random_domain();
        attach_domain(&store, &t, &d).await.expect("attach");
        let other = tenant(&store, "Other").await;
        let other_hash = key(&store, &other).await.secret.hash();

        assert!(
            resolver
                .resolve_api_key(&hash)
                .await
                .expect("key")
                .is_some()
        );
        assert!(
            resolver
                .resolve_host(d.as_str())
                .await
                .expect("host")
                .is_some()
        );
        assert_eq!(
            resolver.resolve_tenant(&t).await.expect("t"),
            Some(TenantStatus::Active)
        );
        assert!(
            resolver
                .resolve_api_key(&other_hash)
                .await
                .expect("key")
                .is_some()
        );
        assert_eq!(resolver.db_queries(), 4);

        set_tenant_status(&store, &t, TenantStatus::Suspended)
            .await
            .expect("suspend");
        resolver.invalidate_tenant(&t).await.expect("invalidate");
        assert_eq!(
            resolver.resolve_api_key(&hash).await.expect("key"),
            Some(resolved(&t, &issued.info.id, TenantStatus::Suspended))
        );
        assert_eq!(
            resolver.resolve_tenant(&t).await.expect("t"),
            Some(TenantStatus::Suspended)
        );
        assert_eq!(
            resolver.resolve_host(d.as_str()).await.expect("host"),
            Some(t.clone())
        );
        assert_eq!(
            resolver.db_queries(),
            7,
            "all three of the tenant's entries were dropped"
        );
        assert!(
            resolver
                .resolve_api_key(&other_hash)
                .await
                .expect("key")
                .is_some()
        );
        assert_eq!(
            resolver.db_queries(),
            7,
            "another tenant's key stayed cached"
        );
    })
    .await;
}

#[tokio::test]
async fn l1_is_bounded_and_evicts_the_oldest_entry() {
    each_database(|store, opts| async move {
        let opts = ResolverOptions {
            l1_capacity: 2,
            ..opts
        };
        let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
        let t = tenant(&store, "Many domains").await;
        let domains = [random_domain(), random_domain(), random_domain()];
        for d in &domains {
            attach_domain(&store, &t, d).await.expect("attach");
            assert!(
                resolver
                    .resolve_host(d.as_str())
                    .await
                    .expect("host")
                    .is_some()
            );
        }
        assert_eq!(resolver.db_queries(), 3);
        for d in &domains[1..] {
            assert!(
                resolver
                    .resolve_host(d.as_str())
                    .await
                    .expect("host")
                    .is_some()
            );
        }
        assert_eq!(resolver.db_queries(), 3, "the two newest are cached");
        assert!(
            resolver
                .resolve_host(domains[0].as_str())
                .await
                .expect("host")
                .is_some()
        );
        assert_eq!(resolver.db_queries(), 4, "the oldest was evicted");
    })
    .await;
}

#[test]
fn evicted_entries_leave_the_tenant_index() {
    let now = Instant::now();
    let mut l1 = L1::new(1);
    let (a, b) = (TenantId::generate(), TenantId::generate());
    let key_a = CacheKey::Tenant(a.clone());
    let key_b = CacheKey::Host(random_domain());
    let epoch = l1.epoch;
    l1.fill(
        key_a.clone(),
        Some(Cached::Tenant {
            id: a.clone(),
            status: TenantStatus::Active,
        }),
        epoch,
        now,
        LONG_TTL,
        LONG_TTL,
    );
    l1.fill(
        key_b.clone(),
        Some(Cached::Host(b.clone())),
        epoch,
        now,
        LONG_TTL,
        LONG_TTL,
    );
    assert_eq!(l1.positive.len(), 1);
    assert!(matches!(l1.lookup(&key_a, now), L1Lookup::Miss { .. }));
    assert!(
        !l1.by_tenant.contains_key(&a),
        "evicted entry still indexed"
    );
    assert_eq!(l1.by_tenant.get(&b).map(HashSet::len), Some(1));

    // A fill that started before an invalidation is dropped.
    let stale_epoch = l1.epoch;
    l1.evict(&Invalidation {
        tenants: vec![b.clone()],
        ..Invalidation::default()
    });
    assert!(l1.by_tenant.is_empty());
    l1.fill(
        key_b.clone(),
        Some(Cached::Host(b)),
        stale_epoch,
        now,
        LONG_TTL,
        LONG_TTL,
    );
    assert!(
        matches!(l1.lookup(&key_b, now), L1Lookup::Miss { .. }),
        "stale fill was kept"
    );
}

#[tokio::test]
async fn broadcasts_from_others_evict_and_unreadable_ones_flush() {
    let db = TestDb::sqlite().await.expect("sqlite");
    let store = db.store().clone();
    let resolver = TenantResolver::new(store.clone(), ResolverOptions::default()).expect("r");
    let t = tenant(&store, "Acme").await;
    let d = random_domain();
    attach_domain(&store, &t, &d).await.expect("attach");
    let broadcast = resolver.broadcast();
    let lookup = async || {
        let before = resolver.db_queries();
        resolver.resolve_host(d.as_str()).await.expect("host");
        resolver.db_queries() > before
    };
    assert!(lookup().await, "first lookup reaches the database");

    let inv = Invalidation {
        domains: vec![d.clone()],
        ..Invalidation::default()
    };
    let payload = WireMessage::new(&inv).encode();
    broadcast.deliver_raw(&broadcast.wire_message(true, TOPIC, Some(&payload)));
    assert!(!lookup().await, "its own broadcast is ignored");
    broadcast.deliver_raw(&broadcast.wire_message(false, TOPIC, Some(&payload)));
    assert!(lookup().await, "another instance's broadcast evicts");
    broadcast.deliver_raw(&broadcast.wire_message(false, "gateways", Some(&payload)));
    assert!(
        !lookup().await,
        "another topic's message evicts nothing here"
    );
    broadcast.deliver_raw(&broadcast.wire_message(false, TOPIC, None));
    assert!(
        lookup().await,
        "a missed marker (too large to send) flushes"
    );
    broadcast.deliver_raw(&broadcast.wire_message(false, TOPIC, Some("{not json")));
    assert!(lookup().await, "an unreadable invalidation flushes");
    broadcast.deliver_raw("{not json");
    assert!(lookup().await, "an unreadable broadcast flushes");
    db.cleanup().await;
}

#[tokio::test]
async fn options_are_validated_at_start_up() {
    each_database(|store, opts| async move {
        let bad = |opts: ResolverOptions| TenantResolver::new(store.clone(), opts).err();
        let option_of = |e: Option<ResolverError>| match e {
            Some(ResolverError::Config { option, .. }) => Some(option),
            _ => None,
        };
        assert_eq!(
            option_of(bad(ResolverOptions {
                l1_capacity: 0,
                ..opts.clone()
            })),
            Some("l1_capacity")
        );
        assert_eq!(
            option_of(bad(ResolverOptions {
                ttl: Duration::ZERO,
                ..opts.clone()
            })),
            Some("ttl")
        );
        assert_eq!(
            option_of(bad(ResolverOptions {
                redis_url: Some("http://x".into()),
                ..opts.clone()
            })),
            Some("redis_url")
        );
        for channel in ["", "Payhost", "payhost-tenants", &"x".repeat(64)] {
            assert_eq!(
                option_of(bad(ResolverOptions {
                    channel: channel.to_string(),
                    ..opts.clone()
                })),
                Some("channel"),
                "{channel:?}"
            );
        }
        match store.backend() {
            Backend::Postgres => {
                assert_eq!(
                    option_of(bad(ResolverOptions {
                        postgres_url: None,
                        ..opts.clone()
                    })),
                    Some("postgres_url"),
                    "PostgreSQL without a broadcast channel must not start"
                );
                let with_redis = ResolverOptions {
                    postgres_url: None,
                    redis_url: Some("redis://127.0.0.1:1".into()),
                    ..opts.clone()
                };
                assert!(TenantResolver::new(store.clone(), with_redis).is_ok());
            }
            Backend::Sqlite => {
                assert_eq!(
                    option_of(bad(ResolverOptions {
                        postgres_url: Some("postgres://u:secret@h/db".into()),
                        ..opts.clone()
                    })),
                    Some("postgres_url")
                );
                let resolver = TenantResolver::new(store.clone(), opts.clone()).expect("ok");
                assert!(
                    resolver
                        .start_invalidation_listener()
                        .await
                        .expect("listen")
                        .is_none(),
                    "SQLite without Redis has nobody to listen to"
                );
            }
        }
        let shown = format!(
            "{:?}",
            ResolverOptions {
                redis_url: Some("redis://:hunter2@h".into()),
                postgres_url: Some("postgres://u:hunter2@h/db".into()),
                ..opts
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_degrades_to_the_database() {
    each_database(|store, opts| async move {
        // Nothing listens on port 1: every Redis call fails fast.
        let opts = ResolverOptions {
            redis_url: Some("redis://127.0.0.1:1".into()),
            ..opts
        };
        let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
        let t = tenant(&store, "Acme").await;
        let issued = key(&store, &t).await;
        let hash = issued.secret.hash();
        let expected = Some(resolved(&t, &issued.info.id, TenantStatus::Active));

        assert_eq!(
            resolver
                .resolve_api_key(&hash)
                .await
                .expect("no redis needed"),
            expected
        );
        assert_eq!(resolver.resolve_api_key(&hash).await.expect("L1"), expected);
        assert_eq!(resolver.db_queries(), 1, "L1 works without Redis");

        assert!(
            resolver.invalidate_api_key(&hash).await.is_err(),
            "a broadcast that could not be sent is reported"
        );
        assert_eq!(resolver.resolve_api_key(&hash).await.expect("db"), expected);
        assert_eq!(
            resolver.db_queries(),
            2,
            "the local eviction happened anyway"
        );
        assert!(resolver.start_invalidation_listener().await.is_err());
    })
    .await;
}

/// The acceptance scenario: two host instances over one PostgreSQL
/// database, invalidations travelling by NOTIFY.
#[tokio::test]
async fn a_second_instance_on_postgres_stops_resolving_a_moved_domain() {
    if std::env::var(POSTGRES_URL_ENV).is_err() {
        eprintln!("skipped: {POSTGRES_URL_ENV} is not set");
        return;
    }
    each_database(|store, opts| async move {
        if store.backend() != Backend::Postgres {
            return;
        }
        let a = TenantResolver::new(store.clone(), opts.clone()).expect("instance a");
        let b = TenantResolver::new(store.clone(), opts).expect("instance b");
        a.start_invalidation_listener()
            .await
            .expect("listen a")
            .expect("pg listens");
        let b_listener = b
            .start_invalidation_listener()
            .await
            .expect("listen b")
            .expect("pg listens");
        two_instances_stay_coherent(&store, &a, &b).await;

        // An invalidation too large for one NOTIFY flushes the other instance.
        let d = random_domain();
        let t = tenant(&store, "Flushed").await;
        attach_domain(&store, &t, &d).await.expect("attach");
        assert!(b.resolve_host(d.as_str()).await.expect("host").is_some());
        let many: Vec<Domain> = (0..400).map(|_| random_domain()).collect();
        a.invalidate_domains(&many).await.expect("invalidate");
        eventually!("the flush-all broadcast", {
            let before = b.db_queries();
            b.resolve_host(d.as_str()).await.expect("host");
            b.db_queries() > before
        });

        drop(b);
        tokio::time::timeout(BROADCAST_DEADLINE, b_listener)
            .await
            .expect("the listener stops when its resolver is dropped")
            .expect("listener task");
    })
    .await;
}

/// Losing the LISTEN connection may lose broadcasts: the instance empties
/// its L1, reconnects, and hears later invalidations again.
#[tokio::test]
async fn a_lost_listen_connection_flushes_l1_and_is_reestablished() {
    if std::env::var(POSTGRES_URL_ENV).is_err() {
        eprintln!("skipped: {POSTGRES_URL_ENV} is not set");
        return;
    }
    each_database(|store, opts| async move {
        if store.backend() != Backend::Postgres {
            return;
        }
        let mut name = [0u8; 6];
        rand::rng().fill_bytes(&mut name);
        let app = format!("payhost_listen_{}", hex::encode(name));
        let url = opts.postgres_url.clone().expect("pg url");
        let sep = if url.contains('?') { '&' } else { '?' };
        let a = TenantResolver::new(store.clone(), opts.clone()).expect("instance a");
        let b = TenantResolver::new(
            store.clone(),
            ResolverOptions {
                postgres_url: Some(format!("{url}{sep}application_name={app}")),
                ..opts
            },
        )
        .expect("instance b");
        b.start_invalidation_listener()
            .await
            .expect("listen b")
            .expect("pg listens");

        let t = tenant(&store, "Acme").await;
        let d = random_domain();
        attach_domain(&store, &t, &d).await.expect("attach");
        assert!(b.resolve_host(d.as_str()).await.expect("b").is_some());
        assert_eq!(b.db_queries(), 1);

        let killed = sqlx::query(
            "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS BIGINT) AS n \
               FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&app)
        .fetch_one(store.pool())
        .await
        .expect("terminate");
        assert_eq!(
            crate::store::get_i64(&killed, "n").expect("n"),
            1,
            "b's LISTEN connection"
        );
        eventually!("b to flush L1 after losing LISTEN", {
            let before = b.db_queries();
            b.resolve_host(d.as_str()).await.expect("b");
            b.db_queries() > before
        });
        two_instances_stay_coherent(&store, &a, &b).await;
    })
    .await;
}

/// The same over Redis: shared L2 plus pub/sub, on every database backend.
#[tokio::test]
async fn a_second_instance_with_redis_shares_l2_and_hears_invalidations() {
    let Some(redis_url) = redis_url() else {
        eprintln!("skipped: {REDIS_URL_ENV} is not set");
        return;
    };
    each_database(move |store, opts| {
        let opts = ResolverOptions {
            redis_url: Some(redis_url.clone()),
            ..opts
        };
        async move {
            let a = TenantResolver::new(store.clone(), opts.clone()).expect("instance a");
            let b = TenantResolver::new(store.clone(), opts.clone()).expect("instance b");
            a.start_invalidation_listener()
                .await
                .expect("listen a")
                .expect("redis");
            b.start_invalidation_listener()
                .await
                .expect("listen b")
                .expect("redis");

            // L2: what A looked up, B gets without touching the database.
            let t = tenant(&store, "Shared").await;
            let issued = key(&store, &t).await;
            let hash = issued.secret.hash();
            let expected = Some(resolved(&t, &issued.info.id, TenantStatus::Active));
            assert_eq!(a.resolve_api_key(&hash).await.expect("a"), expected);
            assert_eq!(a.db_queries(), 1);
            assert_eq!(b.resolve_api_key(&hash).await.expect("b"), expected);
            assert_eq!(b.db_queries(), 0, "an L2 hit makes no database query");
            let unknown = random_domain();
            assert_eq!(a.resolve_host(unknown.as_str()).await.expect("a"), None);
            assert_eq!(b.resolve_host(unknown.as_str()).await.expect("b"), None);
            assert_eq!(b.db_queries(), 0, "negative entries are shared too");

            // A tenant invalidation tombstones the tenant's L2 keys: a
            // fresh instance (empty L1) sees the new status.
            set_tenant_status(&store, &t, TenantStatus::Suspended)
                .await
                .expect("suspend");
            a.invalidate_tenant(&t).await.expect("invalidate");
            let c = TenantResolver::new(store.clone(), opts).expect("instance c");
            assert_eq!(
                c.resolve_api_key(&hash).await.expect("c"),
                Some(resolved(&t, &issued.info.id, TenantStatus::Suspended))
            );
            assert_eq!(c.db_queries(), 1, "the tombstone sent c to the database");
            eventually!(
                "b to hear the tenant invalidation",
                b.resolve_api_key(&hash)
                    .await
                    .expect("b")
                    .map(|r| r.tenant_status)
                    == Some(TenantStatus::Suspended)
            );

            two_instances_stay_coherent(&store, &a, &b).await;
        }
    })
    .await;
}

/// B caches a domain and a key; A changes both and invalidates; B must
/// stop serving the old answers (polled, bounded).
async fn two_instances_stay_coherent(store: &Store, a: &TenantResolver, b: &TenantResolver) {
    let old_owner = tenant(store, "Old owner").await;
    let new_owner = tenant(store, "New owner").await;
    let d = random_domain();
    attach_domain(store, &old_owner, &d).await.expect("attach");
    let issued = key(store, &old_owner).await;
    let hash = issued.secret.hash();

    assert_eq!(
        b.resolve_host(d.as_str()).await.expect("b"),
        Some(old_owner.clone())
    );
    assert!(b.resolve_api_key(&hash).await.expect("b").is_some());
    let cached = b.db_queries();
    assert_eq!(
        b.resolve_host(d.as_str()).await.expect("b"),
        Some(old_owner.clone())
    );
    assert_eq!(b.db_queries(), cached, "b answers from its cache");

    let moved = move_domain(store, &d, &new_owner).await.expect("move");
    assert_eq!(
        b.resolve_host(d.as_str()).await.expect("b"),
        Some(old_owner.clone()),
        "b keeps its cached answer until it is told"
    );
    a.invalidate_domain_change(&moved)
        .await
        .expect("invalidate");
    eventually!(
        "b to stop resolving the moved domain to its old owner",
        b.resolve_host(d.as_str()).await.expect("b") != Some(old_owner.clone())
    );
    assert_eq!(
        b.resolve_host(d.as_str()).await.expect("b"),
        Some(new_owner)
    );

    let revoked = revoke_api_key(store, &old_owner, &issued.info.id)
        .await
        .expect("revoke")
        .expect("active");
    a.invalidate_api_key(&revoked.hash)
        .await
        .expect("invalidate");
    eventually!(
        "b to stop resolving the revoked key",
        b.resolve_api_key(&hash).await.expect("b").is_none()
    );
}

/// A channel of this test's own: tests run side by side on one
/// PostgreSQL server and one Redis, and one test's flush must not reach
/// another's instances.
fn test_channel() -> String {
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    format!("payhost_test_{}", hex::encode(suffix))
}
