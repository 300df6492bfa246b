//! The balance projection and the daily aggregates: derived state that
//! database triggers keep in the transaction that inserts each ledger row or
//! refund hold (migration 0008, decision record 0011), read here, and
//! recomputed from the rows by [`verify_projections`].
//!
//! Amounts are stored split in two 64-bit parts (`amount / SPLIT` and
//! `amount % SPLIT` summed separately) and recombined as `i128`, so no sum
//! overflows short of ~9 × 10^12 rows.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::any::AnyRow;

use super::LedgerError;
use crate::store::{Backend, Currency, Store, StoreError, TenantId, get_i64, get_parsed, get_text};

/// Money per currency, read from the projection (one row per currency).
///
/// The sums are `i128`: a balance is a sum over any number of rows and must
/// never overflow, whatever was booked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The currency of the amounts.
    pub currency: Currency,
    /// Sum of approved rows, minor units.
    pub paid: i128,
    /// Sum of refund rows, minor units.
    pub refunded: i128,
    /// Held by unfinished refunds (reservations), minor units; counted in
    /// neither `refunded` nor `net` until the refund is booked.
    pub held: i128,
    /// `paid - refunded`, minor units.
    pub net: i128,
}

/// The split of every stored sum (see the module docs and migration 0008).
pub(crate) const SPLIT: i64 = 1_000_000;

/// `high * SPLIT + low` of two columns of `row`.
pub(crate) fn recombine(
    row: &AnyRow,
    high: &'static str,
    low: &'static str,
) -> Result<i128, StoreError> {
    Ok(i128::from(get_i64(row, high)?) * i128::from(SPLIT) + i128::from(get_i64(row, low)?))
}

/// `tenant`'s balance in each currency it has approved or refunded rows in,
/// sorted by currency: one indexed read of at most a few rows, whatever the
/// size of the ledger. Pending rows count towards nothing.
pub async fn balances(store: &Store, tenant: &TenantId) -> Result<Vec<Balance>, LedgerError> {
    let rows = sqlx::query(BALANCE_SQL)
        .bind(tenant.as_str())
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|row| {
            let paid = recombine(row, "paid_high", "paid_low")?;
            let refunded = recombine(row, "refunded_high", "refunded_low")?;
            Ok(Balance {
                currency: get_parsed(row, "currency", Currency::parse)?,
                paid,
                refunded,
                held: recombine(row, "held_high", "held_low")?,
                net: paid - refunded,
            })
        })
        .collect()
}

/// The query behind [`balances`] (`$1` = tenant), public for the query-plan tests.
pub(crate) const BALANCE_SQL: &str = "SELECT currency, paid_high, paid_low, refunded_high, refunded_low, \
            held_high, held_low \
       FROM balance_projection WHERE tenant_id = $1 ORDER BY currency";

/// One projection entry whose stored values differ from the fold of the rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionDiff {
    /// `balance_projection` or `ledger_daily`.
    pub table: &'static str,
    /// The entry's key, e.g. `ten_…/EUR` or `ten_…/2026-12-02/EUR/stripe`.
    pub key: String,
    /// Which value differs (`paid`, `refunded`, `held`, `payments`, `refunds`).
    pub field: &'static str,
    /// The value recomputed from the rows (0 when the rows have no entry).
    pub expected: i128,
    /// The value stored (0 when the projection has no entry).
    pub stored: i128,
}

/// What [`verify_projections`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Balance entries compared (union of stored and recomputed keys).
    pub balances_checked: usize,
    /// Daily entries compared.
    pub daily_checked: usize,
    /// Every difference; empty when the projections equal the rows.
    pub differences: Vec<ProjectionDiff>,
}

impl VerifyReport {
    /// Whether the projections equal the fold of the rows.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Values of one entry, by field name, in a fixed order.
type Entries = BTreeMap<String, Vec<i128>>;

const BALANCE_FIELDS: [&str; 3] = ["paid", "refunded", "held"];
const DAILY_FIELDS: [&str; 4] = ["paid", "refunded", "payments", "refunds"];

/// Recomputes the balance projection and the daily aggregates from the
/// ledger rows and refund holds (of `tenant`, or of every tenant) and
/// compares them with what is stored. Reads only; a full scan of the
/// tenant's rows, so it is an operator's check (`payhost ledger verify`),
/// not a request path.
pub async fn verify_projections(
    store: &Store,
    tenant: Option<&TenantId>,
) -> Result<VerifyReport, LedgerError> {
    // One snapshot for every statement, so concurrent bookings cannot show
    // up as differences (SQLite's read transaction is one snapshot already).
    let mut tx = store.pool().begin().await.map_err(StoreError::from)?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    let filter = |column: &str| match tenant {
        Some(_) => format!("WHERE {column} = $1"),
        None => String::new(),
    };
    let and_filter = |column: &str| match tenant {
        Some(_) => format!("AND {column} = $1"),
        None => String::new(),
    };
    let part = |status: &str, op: &str| {
        format!(
            "CAST(COALESCE(SUM(CASE WHEN status = '{status}' THEN amount_minor {op} {SPLIT} ELSE 0 END), 0) AS BIGINT)"
        )
    };
    let sums = format!(
        "{} AS paid_high, {} AS paid_low, {} AS refunded_high, {} AS refunded_low",
        part("approved", "/"),
        part("approved", "%"),
        part("refunded", "/"),
        part("refunded", "%"),
    );

    // Balances: rows, then holds, then what is stored.
    let mut expected = Entries::new();
    let sql = format!(
        "SELECT tenant_id, currency, {sums} FROM payments \
          WHERE status IN ('approved', 'refunded') {} GROUP BY tenant_id, currency",
        and_filter("tenant_id")
    );
    for row in fetch(&mut tx, &sql, tenant).await? {
        let key = balance_key(&row)?;
        expected.insert(
            key,
            vec![
                recombine(&row, "paid_high", "paid_low")?,
                recombine(&row, "refunded_high", "refunded_low")?,
                0,
            ],
        );
    }
    let sql = format!(
        "SELECT r.tenant_id AS tenant_id, t.currency AS currency, \
                CAST(SUM(r.amount_minor / {SPLIT}) AS BIGINT) AS held_high, \
                CAST(SUM(r.amount_minor % {SPLIT}) AS BIGINT) AS held_low \
           FROM refund_reservations r JOIN refund_totals t ON t.payment_id = r.payment_id \
           {} GROUP BY r.tenant_id, t.currency",
        filter("r.tenant_id")
    );
    for row in fetch(&mut tx, &sql, tenant).await? {
        let entry = expected
            .entry(balance_key(&row)?)
            .or_insert_with(|| vec![0; 3]);
        entry[2] = recombine(&row, "held_high", "held_low")?;
    }
    let sql = format!(
        "SELECT tenant_id, currency, paid_high, paid_low, refunded_high, refunded_low, \
                held_high, held_low FROM balance_projection {}",
        filter("tenant_id")
    );
    let mut stored = Entries::new();
    for row in fetch(&mut tx, &sql, tenant).await? {
        stored.insert(
            balance_key(&row)?,
            vec![
                recombine(&row, "paid_high", "paid_low")?,
                recombine(&row, "refunded_high", "refunded_low")?,
                recombine(&row, "held_high", "held_low")?,
            ],
        );
    }
    let mut report = VerifyReport::default();
    report.balances_checked = compare(
        "balance_projection",
        &BALANCE_FIELDS,
        &expected,
        &stored,
        &mut report.differences,
    );

    // Daily aggregates.
    let counts = "CAST(COALESCE(SUM(CASE WHEN status = 'approved' THEN 1 ELSE 0 END), 0) AS BIGINT) AS payments, \
                  CAST(COALESCE(SUM(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END), 0) AS BIGINT) AS refunds";
    let sql = format!(
        "SELECT tenant_id, created_at / 86400000 AS day, currency, COALESCE(provider, '') AS provider, \
                {sums}, {counts} FROM payments \
          WHERE status IN ('approved', 'refunded') {} \
          GROUP BY tenant_id, created_at / 86400000, currency, COALESCE(provider, '')",
        and_filter("tenant_id")
    );
    let mut expected = Entries::new();
    for row in fetch(&mut tx, &sql, tenant).await? {
        expected.insert(daily_key(&row)?, daily_values(&row)?);
    }
    let sql = format!(
        "SELECT tenant_id, day, currency, provider, paid_high, paid_low, refunded_high, \
                refunded_low, payments, refunds FROM ledger_daily {}",
        filter("tenant_id")
    );
    let mut stored = Entries::new();
    for row in fetch(&mut tx, &sql, tenant).await? {
        stored.insert(daily_key(&row)?, daily_values(&row)?);
    }
    report.daily_checked = compare(
        "ledger_daily",
        &DAILY_FIELDS,
        &expected,
        &stored,
        &mut report.differences,
    );
    tx.rollback().await.map_err(StoreError::from)?;
    Ok(report)
}

async fn fetch(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    sql: &str,
    tenant: Option<&TenantId>,
) -> Result<Vec<AnyRow>, LedgerError> {
    let mut q = sqlx::query(sql);
    if let Some(tenant) = tenant {
        q = q.bind(tenant.as_str());
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

fn balance_key(row: &AnyRow) -> Result<String, StoreError> {
    Ok(format!(
        "{}/{}",
        get_text(row, "tenant_id")?,
        get_text(row, "currency")?
    ))
}

fn daily_key(row: &AnyRow) -> Result<String, StoreError> {
    let provider = get_text(row, "provider")?;
    Ok(format!(
        "{}/{}/{}/{}",
        get_text(row, "tenant_id")?,
        super::reports::day_to_date(get_i64(row, "day")?),
        get_text(row, "currency")?,
        if provider.is_empty() { "-" } else { &provider }
    ))
}

fn daily_values(row: &AnyRow) -> Result<Vec<i128>, StoreError> {
    Ok(vec![
        recombine(row, "paid_high", "paid_low")?,
        recombine(row, "refunded_high", "refunded_low")?,
        i128::from(get_i64(row, "payments")?),
        i128::from(get_i64(row, "refunds")?),
    ])
}

/// Appends the differences between `expected` and `stored` (a missing entry
/// counts as all zeros); returns how many keys were compared.
fn compare(
    table: &'static str,
    fields: &[&'static str],
    expected: &Entries,
    stored: &Entries,
    out: &mut Vec<ProjectionDiff>,
) -> usize {
    let zeros = vec![0; fields.len()];
    let keys: std::collections::BTreeSet<&String> = expected.keys().chain(stored.keys()).collect();
    for key in &keys {
        let want = expected.get(*key).unwrap_or(&zeros);
        let have = stored.get(*key).unwrap_or(&zeros);
        for (i, field) in fields.iter().enumerate() {
            if want[i] != have[i] {
                out.push(ProjectionDiff {
                    table,
                    key: (*key).clone(),
                    field,
                    expected: want[i],
                    stored: have[i],
                });
            }
        }
    }
    keys.len()
}
