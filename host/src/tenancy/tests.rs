//! Tenancy tests: run on SQLite always and on PostgreSQL when
//! `PAYHOST_TEST_POSTGRES_URL` is set.

use sqlx::Row;

use super::*;
use crate::store::testing::{each_backend, tenant};

fn domain(raw: &str) -> Domain {
    Domain::parse(raw).expect("domain")
}

#[tokio::test]
async fn tenants_are_created_read_suspended_and_moved_between_plans() {
    each_backend(|store| async move {
        let name = TenantName::parse("  Acme Books ").expect("name");
        let created = create_tenant(&store, &name, &PlanName::free())
            .await
            .expect("create");
        assert!(created.id.as_str().starts_with("ten_"));
        assert_eq!(created.name.as_str(), "Acme Books", "names are trimmed");
        assert_eq!(created.status, TenantStatus::Active);
        assert_eq!(created.plan, PlanName::free());
        assert_eq!(
            get_tenant(&store, &created.id).await.expect("get"),
            Some(created.clone())
        );
        assert_eq!(
            get_tenant(&store, &TenantId::generate())
                .await
                .expect("unknown"),
            None
        );

        let suspended = set_tenant_status(&store, &created.id, TenantStatus::Suspended)
            .await
            .expect("suspend");
        assert_eq!(suspended.status, TenantStatus::Suspended);
        let pro = PlanName::parse("pro").expect("plan");
        let moved = set_tenant_plan(&store, &created.id, &pro)
            .await
            .expect("plan");
        assert_eq!((moved.plan, moved.status), (pro, TenantStatus::Suspended));

        let err = set_tenant_status(&store, &TenantId::generate(), TenantStatus::Active)
            .await
            .expect_err("unknown tenant");
        assert!(matches!(err, TenancyError::TenantNotFound(_)), "{err:?}");

        let second = tenant(&store, "Second").await;
        let all: Vec<TenantId> = list_tenants(&store)
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(all.len(), 2);
        assert!(all.contains(&created.id) && all.contains(&second));
    })
    .await;
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_resolved_and_revoked() {
    each_backend(|store| async move {
        let a = tenant(&store, "A").await;
        let b = tenant(&store, "B").await;
        let issued = issue_api_key(&store, &a, "ci deploys")
            .await
            .expect("issue");
        let secret = issued.secret.expose().to_owned();
        assert!(secret.starts_with("ph_"));
        assert_eq!(secret.len(), 3 + 43, "32 random bytes, base64url");
        assert_eq!(issued.info.prefix, secret[..11]);
        assert!(
            !format!("{issued:?}").contains(&secret),
            "Debug never shows the secret"
        );

        // Only the hash and prefix are stored.
        let stored = sqlx::query("SELECT prefix, key_hash, label FROM api_keys WHERE id = $1")
            .bind(issued.info.id.as_str())
            .fetch_one(store.pool())
            .await
            .expect("row");
        let hash: String = stored.try_get("key_hash").expect("hash");
        assert_eq!(hash, ApiKeyHash::of(&secret).as_str());
        assert_ne!(hash, secret);
        assert_eq!(
            stored.try_get::<String, _>("label").expect("label"),
            "ci deploys"
        );

        let resolved = resolve_api_key(&store, &ApiKeyHash::of(&secret))
            .await
            .expect("resolve");
        assert_eq!(
            resolved,
            Some(ResolvedApiKey {
                tenant_id: a.clone(),
                key_id: issued.info.id.clone(),
                tenant_status: TenantStatus::Active,
            })
        );
        assert_eq!(
            resolve_api_key(&store, &ApiKeyHash::of("ph_wrong"))
                .await
                .expect("unknown"),
            None
        );

        let listed = list_api_keys(&store, &a).await.expect("list");
        assert_eq!(listed, vec![issued.info.clone()]);
        assert!(list_api_keys(&store, &b).await.expect("b").is_empty());

        // A suspended tenant's key still resolves, with the status to refuse it.
        set_tenant_status(&store, &a, TenantStatus::Suspended)
            .await
            .expect("suspend");
        let resolved = resolve_api_key(&store, &issued.secret.hash())
            .await
            .expect("resolve");
        assert_eq!(
            resolved.map(|r| r.tenant_status),
            Some(TenantStatus::Suspended)
        );

        // Another tenant cannot revoke it.
        assert_eq!(
            revoke_api_key(&store, &b, &issued.info.id)
                .await
                .expect("foreign"),
            None
        );
        assert!(
            resolve_api_key(&store, &issued.secret.hash())
                .await
                .expect("still")
                .is_some()
        );

        let revoked = revoke_api_key(&store, &a, &issued.info.id)
            .await
            .expect("revoke");
        assert_eq!(
            revoked,
            Some(RevokedApiKey {
                id: issued.info.id.clone(),
                hash: ApiKeyHash::of(&secret)
            })
        );
        assert_eq!(
            resolve_api_key(&store, &issued.secret.hash())
                .await
                .expect("gone"),
            None
        );
        assert_eq!(
            revoke_api_key(&store, &a, &issued.info.id)
                .await
                .expect("twice"),
            None
        );
        let listed = list_api_keys(&store, &a).await.expect("list");
        assert!(listed[0].revoked_at.is_some(), "revoked keys stay listed");

        // A second key is independent of the revoked one.
        let other = issue_api_key(&store, &a, "").await.expect("second");
        assert_ne!(other.secret, issued.secret);
        assert!(
            resolve_api_key(&store, &other.secret.hash())
                .await
                .expect("new")
                .is_some()
        );

        let err = issue_api_key(&store, &TenantId::generate(), "x")
            .await
            .expect_err("no tenant");
        assert!(matches!(err, TenancyError::TenantNotFound(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn domains_attach_move_detach_and_report_what_changed() {
    each_backend(|store| async move {
        let a = tenant(&store, "A").await;
        let b = tenant(&store, "B").await;
        let shop = domain("Shop.Example.COM.");
        assert_eq!(shop.as_str(), "shop.example.com");

        let first = attach_domain(&store, &a, &shop).await.expect("attach");
        assert_eq!(first.previous_owner, None);
        assert_eq!(first.owner, Some(a.clone()));
        assert!(first.old_domains.is_empty());

        let pay = domain("pay.acme.test");
        let second = attach_domain(&store, &a, &pay)
            .await
            .expect("attach second");
        assert_eq!(
            second.old_domains,
            vec![shop.clone()],
            "the tenant's domains before the write"
        );
        let again = attach_domain(&store, &a, &pay).await.expect("idempotent");
        assert_eq!(again.previous_owner, Some(a.clone()));

        assert_eq!(
            resolve_domain(&store, "SHOP.example.com:8443")
                .await
                .expect("resolve"),
            Some(a.clone())
        );
        assert_eq!(
            resolve_domain(&store, "unknown.example.com")
                .await
                .expect("unknown"),
            None
        );
        assert_eq!(
            resolve_domain(&store, "not a host!")
                .await
                .expect("garbage"),
            None
        );

        let err = attach_domain(&store, &b, &shop).await.expect_err("taken");
        assert!(
            matches!(&err, TenancyError::DomainTaken { owner, .. } if *owner == a),
            "{err:?}"
        );
        assert_eq!(
            resolve_domain(&store, "shop.example.com")
                .await
                .expect("unchanged"),
            Some(a.clone())
        );

        let moved = move_domain(&store, &shop, &b).await.expect("move");
        assert_eq!(
            moved.previous_owner,
            Some(a.clone()),
            "the old owner is reported for invalidation"
        );
        assert_eq!(moved.owner, Some(b.clone()));
        assert_eq!(
            resolve_domain(&store, "shop.example.com")
                .await
                .expect("moved"),
            Some(b.clone())
        );
        assert_eq!(
            list_domains(&store, &a).await.expect("a"),
            vec![pay.clone()]
        );
        assert_eq!(
            list_domains(&store, &b).await.expect("b"),
            vec![shop.clone()]
        );

        assert_eq!(
            detach_domain(&store, &b, &pay)
                .await
                .expect("foreign detach"),
            None
        );
        let detached = detach_domain(&store, &a, &pay)
            .await
            .expect("detach")
            .expect("was attached");
        assert_eq!(detached.previous_owner, Some(a.clone()));
        assert_eq!(detached.owner, None);
        assert_eq!(detached.old_domains, vec![pay.clone()]);
        assert_eq!(
            resolve_domain(&store, "pay.acme.test").await.expect("gone"),
            None
        );

        let err = attach_domain(&store, &TenantId::generate(), &domain("x.test"))
            .await
            .expect_err("no tenant");
        assert!(matches!(err, TenancyError::TenantNotFound(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn concurrent_attaches_of_one_domain_have_one_winner() {
    each_backend(|store| async move {
        let mut tenants = vec![];
        for i in 0..8 {
            tenants.push(tenant(&store, &format!("T{i}")).await);
        }
        let contested = domain("contested.example.com");
        let tasks: Vec<_> = tenants
            .iter()
            .cloned()
            .map(|t| {
                let (store, d) = (store.clone(), contested.clone());
                tokio::spawn(async move { attach_domain(&store, &t, &d).await.map(|_| t) })
            })
            .collect();
        let mut winners = vec![];
        for task in tasks {
            match task.await.expect("join") {
                Ok(t) => winners.push(t),
                Err(TenancyError::DomainTaken { .. }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1);
        assert_eq!(
            resolve_domain(&store, contested.as_str())
                .await
                .expect("resolve"),
            winners.pop()
        );
    })
    .await;
}

#[test]
fn domain_and_name_validation() {
    assert!(Domain::parse("-bad.example.com").is_err());
    assert!(Domain::parse("a..b").is_err());
    assert!(Domain::parse("").is_err());
    assert!(Domain::parse("has space.com").is_err());
    for not_a_host_name in [
        "com",
        "localhost",
        "127.0.0.1",
        "10.0.0.1.",
        "[::1]",
        "a.b.123",
    ] {
        assert!(Domain::parse(not_a_host_name).is_err(), "{not_a_host_name}");
    }
    assert!(Domain::parse(&format!("{}.com", "a".repeat(63))).is_ok());
    assert!(Domain::parse(&format!("{}.com", "a".repeat(64))).is_err());
    let long = format!("{}.com", vec!["a".repeat(62); 4].join("."));
    assert!(long.len() > 253 && Domain::parse(&long).is_err());
    assert_eq!(
        Domain::from_host_header("acme.localhost:3000").map(String::from),
        Ok("acme.localhost".into())
    );
    assert!(TenantName::parse("   ").is_err());
    assert!(PlanName::parse("Pro").is_err());
}
