//! The audit log: who did what, to which tenant, when.
//!
//! Owns the append-only `audit_events` table (UPDATE and DELETE are refused by
//! database triggers on both backends). Callers redact secrets before
//! recording; as a second line of defence [`record`] also replaces the value
//! of any JSON key that looks secret (`secret`, `password`, `token`,
//! `credential`, `api_key`, `authorization`, `private_key`) with `"[redacted]"`.
//!
//! Must never: store a secret, change or remove an event, or fail silently —
//! a failed audit write is an error the caller sees.

use std::fmt;

use serde::Serialize;
use sqlx::any::AnyRow;

use crate::store::{
    ApiKeyId, Arg, AuditEventId, Page, ParseError, SqlBuf, Store, StoreError, TenantId, UnixMillis,
    WriteTx, get_json, get_opt_parsed, get_parsed, get_text, get_time, page_of,
};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An input did not have the required shape.
    #[error(transparent)]
    Invalid(#[from] ParseError),
    /// The pagination cursor was not produced by this listing.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Store(StoreError::Database(e))
    }
}

/// Who acted: `operator:<name>`, `key:<api key id>` or `system:<component>`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Actor(String);

impl Actor {
    /// A platform operator (admin token holder), by name.
    pub fn operator(name: &str) -> Result<Self, ParseError> {
        Self::parse(&format!("operator:{name}"))
    }

    /// A tenant acting through one of its API keys.
    pub fn api_key(key: &ApiKeyId) -> Self {
        Self(format!("key:{key}"))
    }

    /// The host itself (webhook worker, janitor, …).
    pub fn system(component: &str) -> Result<Self, ParseError> {
        Self::parse(&format!("system:{component}"))
    }

    /// Validates a stored actor: 1–200 visible characters.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() || raw.chars().count() > 200 || raw.chars().any(char::is_control) {
            return Err(ParseError::new(
                "actor",
                "must be 1-200 characters without control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The actor as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actor({})", self.0)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.0
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Its id (`aud_…`).
    pub id: AuditEventId,
    /// Who acted.
    pub actor: Actor,
    /// What they did, e.g. `gateway.saved`, `refund.created`.
    pub action: String,
    /// The tenant affected, if any.
    pub tenant_id: Option<TenantId>,
    /// Details, secrets redacted.
    pub details: serde_json::Value,
    /// When.
    pub created_at: UnixMillis,
}

/// Filters for [`list`]; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events about this tenant.
    pub tenant_id: Option<TenantId>,
    /// Only this action.
    pub action: Option<String>,
}

fn validate_action(action: &str) -> Result<(), ParseError> {
    let ok = !action.is_empty()
        && action.len() <= 100
        && action.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ParseError::new(
            "audit action",
            "must be 1-100 characters of [a-z0-9._-]",
        ))
    }
}

const SECRET_KEY_MARKERS: &[&str] = &[
    "secret",
    "password",
    "token",
    "credential",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
];

/// Replaces the value of every secret-looking key, at any depth.
fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if SECRET_KEY_MARKERS.iter().any(|m| key.contains(m)) {
                    *v = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Records `action` by the host's own `component` (e.g. `webhooks`) for an
/// operator to see, logging instead of returning a failure: for callers
/// whose own record is already stored and must not fail because the audit
/// write did.
pub async fn record_by_system(
    store: &Store,
    component: &str,
    action: &str,
    tenant: Option<&TenantId>,
    details: serde_json::Value,
) {
    let audited = match Actor::system(component) {
        Ok(actor) => record(store, &actor, action, tenant, details)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = audited {
        tracing::error!(tenant = ?tenant.map(TenantId::as_str), action, "not audited: {e}");
    }
}

/// Appends an event. See the module docs on redaction.
pub async fn record(
    store: &Store,
    actor: &Actor,
    action: &str,
    tenant: Option<&TenantId>,
    details: serde_json::Value,
) -> Result<AuditEvent, AuditError> {
    let mut tx = store.begin_write().await?;
    let event = record_in(&mut tx, actor, action, tenant, details).await?;
    tx.commit().await?;
    Ok(event)
}

/// [`record`] inside the caller's transaction, so the change and its audit
/// event commit (or roll back) together.
pub async fn record_in(
    tx: &mut WriteTx,
    actor: &Actor,
    action: &str,
    tenant: Option<&TenantId>,
    details: serde_json::Value,
) -> Result<AuditEvent, AuditError> {
    let (event, insert) = event_insert(actor, action, tenant, details)?;
    insert.query().execute(tx.conn()).await?;
    Ok(event)
}

/// The event [`record_in`] would append, and the statement that appends it,
/// for a transaction that is not a [`WriteTx`] (a job of SQLite's writer).
pub(crate) fn event_insert(
    actor: &Actor,
    action: &str,
    tenant: Option<&TenantId>,
    mut details: serde_json::Value,
) -> Result<(AuditEvent, SqlBuf), AuditError> {
    validate_action(action)?;
    redact(&mut details);
    let event = AuditEvent {
        id: AuditEventId::generate(),
        actor: actor.clone(),
        action: action.to_owned(),
        tenant_id: tenant.cloned(),
        details,
        created_at: UnixMillis::now(),
    };
    let insert = SqlBuf::bound(
        "INSERT INTO audit_events (id, actor, action, tenant_id, details, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)"
            .to_owned(),
        vec![
            Arg::Text(event.id.as_str().to_owned()),
            Arg::Text(event.actor.as_str().to_owned()),
            Arg::Text(event.action.clone()),
            Arg::opt_text(event.tenant_id.as_ref().map(TenantId::as_str)),
            Arg::Text(event.details.to_string()),
            Arg::Int(event.created_at.as_i64()),
        ],
    );
    Ok((event, insert))
}

fn decode(row: &AnyRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: get_parsed(row, "id", AuditEventId::parse)?,
        actor: get_parsed(row, "actor", Actor::parse)?,
        action: get_text(row, "action")?,
        tenant_id: get_opt_parsed(row, "tenant_id", TenantId::parse)?,
        details: get_json(row, "details")?,
        created_at: get_time(row, "created_at")?,
    })
}

/// Events matching `filter`, newest first, `limit` per page (clamped to
/// 1..=[`MAX_PAGE_SIZE`]); pass the previous page's `next_cursor` to continue.
pub async fn list(
    store: &Store,
    filter: &AuditFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<AuditEvent>, AuditError> {
    let mut q = SqlBuf::new(
        "SELECT id, actor, action, tenant_id, details, created_at FROM audit_events WHERE 1 = 1",
    );
    if let Some(tenant) = &filter.tenant_id {
        let p = q.arg(Arg::Text(tenant.as_str().to_owned()));
        q.push(&format!(" AND tenant_id = {p}"));
    }
    if let Some(action) = &filter.action {
        let p = q.arg(Arg::Text(action.clone()));
        q.push(&format!(" AND action = {p}"));
    }
    let limit = q
        .newest_first_page(cursor, limit)
        .map_err(|_| AuditError::InvalidCursor)?;
    let rows = q.query().fetch_all(store.pool()).await?;
    let items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    Ok(page_of(items, limit, |e| {
        (e.created_at.as_i64(), e.id.as_str().to_owned())
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::testing::each_backend;
    use crate::store::{Violation, classify};

    #[tokio::test]
    async fn events_are_recorded_redacted_and_listed_newest_first() {
        each_backend(|store| async move {
            let tenant = TenantId::generate();
            let operator = Actor::operator("alice").expect("actor");
            let saved = record(
                &store,
                &operator,
                "gateway.saved",
                Some(&tenant),
                serde_json::json!({
                    "provider": "stripe",
                    "credentials": {"secret_key": "sk_live_123"},
                    "fields": [{"webhook_secret": "whsec_1", "name": "ok"}],
                }),
            )
            .await
            .expect("record");
            assert_eq!(saved.details["provider"], "stripe");
            assert_eq!(saved.details["credentials"], "[redacted]");
            assert_eq!(saved.details["fields"][0]["webhook_secret"], "[redacted]");
            assert_eq!(saved.details["fields"][0]["name"], "ok");

            let key = Actor::api_key(&ApiKeyId::generate());
            record(
                &store,
                &key,
                "refund.created",
                Some(&tenant),
                serde_json::json!({"amount": 5}),
            )
            .await
            .expect("refund");
            let system = Actor::system("janitor").expect("system");
            record(&store, &system, "janitor.run", None, serde_json::json!({}))
                .await
                .expect("system");

            let page = list(&store, &AuditFilter::default(), None, 10)
                .await
                .expect("list");
            assert_eq!(page.items.len(), 3);
            assert_eq!(
                page.items[2], saved,
                "stored exactly as returned, oldest last"
            );
            let raw: String = sqlx::query("SELECT details FROM audit_events WHERE id = $1")
                .bind(saved.id.as_str())
                .fetch_one(store.pool())
                .await
                .map(|r| sqlx::Row::try_get(&r, "details"))
                .expect("row")
                .expect("details");
            assert!(
                !raw.contains("sk_live_123") && !raw.contains("whsec_1"),
                "{raw}"
            );

            let only_tenant = AuditFilter {
                tenant_id: Some(tenant.clone()),
                action: None,
            };
            let page = list(&store, &only_tenant, None, 10)
                .await
                .expect("filtered");
            assert_eq!(page.items.len(), 2);
            let only_refunds = AuditFilter {
                tenant_id: None,
                action: Some("refund.created".into()),
            };
            let page = list(&store, &only_refunds, None, 10)
                .await
                .expect("by action");
            assert_eq!(page.items.len(), 1);
            assert_eq!(page.items[0].actor, key);

            let err = record(&store, &operator, "Bad Action", None, serde_json::json!({}))
                .await
                .expect_err("invalid action");
            assert!(matches!(err, AuditError::Invalid(_)), "{err:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn audit_pagination_returns_every_event_once() {
        each_backend(|store| async move {
            let actor = Actor::system("test").expect("actor");
            let mut expected = HashSet::new();
            for i in 0..11 {
                let e = record(&store, &actor, "tick", None, serde_json::json!({"i": i}))
                    .await
                    .expect("record");
                expected.insert(e.id);
            }
            let mut seen = HashSet::new();
            let mut cursor = None;
            loop {
                let page = list(&store, &AuditFilter::default(), cursor.as_deref(), 4)
                    .await
                    .expect("page");
                for e in page.items {
                    assert!(seen.insert(e.id), "event repeated");
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, expected);
            let err = list(&store, &AuditFilter::default(), Some("%%%"), 4)
                .await
                .expect_err("cursor");
            assert!(matches!(err, AuditError::InvalidCursor), "{err:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn audit_events_cannot_be_updated_or_deleted() {
        each_backend(|store| async move {
            let actor = Actor::operator("bob").expect("actor");
            let event = record(
                &store,
                &actor,
                "flag.changed",
                None,
                serde_json::json!({"flag": "x"}),
            )
            .await
            .expect("record");
            for sql in [
                "UPDATE audit_events SET action = 'tampered'",
                "UPDATE audit_events SET details = '{}'",
                "DELETE FROM audit_events",
            ] {
                let err = sqlx::query(sql).execute(store.pool()).await.expect_err(sql);
                match classify(&err) {
                    Some(Violation::Trigger { message }) => {
                        assert!(message.contains("audit log is append-only"), "{message}")
                    }
                    other => panic!("{sql}: expected a trigger violation, got {other:?}"),
                }
            }
            let page = list(&store, &AuditFilter::default(), None, 10)
                .await
                .expect("list");
            assert_eq!(page.items, vec![event], "the event is unchanged");
        })
        .await;
    }
}
