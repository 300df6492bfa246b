//! The API's response types: what every endpoint answers, as Rust types
//! the OpenAPI document is generated from.
//!
//! Invariant: a handler answers only these types (or an [`ApiError`](super::ApiError),
//! rendered as [`ErrorBody`]), so the served document describes every
//! body the server sends. Times are Unix milliseconds; money is integer
//! minor units.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::ErrorCode;
use crate::audit::AuditEvent as StoredAuditEvent;
use crate::gateways::GatewayView;
use crate::ledger::{self, LedgerRow, Order as StoredOrder};
use crate::tenancy::Tenant as StoredTenant;

/// The error answer: `{"error":{"code","message"}}`, `details` on some codes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// Machine-readable extras (e.g. `decline_code`, `remaining`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some("Stable machine code of an error."))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// Loaded providers.
    pub providers: Vec<HealthProvider>,
}

/// A loaded provider, as `/health` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthProvider {
    /// Provider id.
    pub id: String,
    /// Component version.
    pub version: String,
}

/// `GET /public/tenant`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicTenant {
    /// The tenant the `Host` header belongs to.
    pub tenant_id: String,
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    /// Its id (`ten_…`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Plan name.
    pub plan: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Creation time.
    pub created_at: i64,
}

impl From<&StoredTenant> for Tenant {
    fn from(t: &StoredTenant) -> Tenant {
        Tenant {
            id: t.id.as_str().to_owned(),
            name: t.name.as_str().to_owned(),
            plan: t.plan.as_str().to_owned(),
            status: t.status.as_str().to_owned(),
            created_at: t.created_at.as_i64(),
        }
    }
}

/// One page of a keyset-paginated listing, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    /// This page.
    pub items: Vec<T>,
    /// Cursor of the next (older) page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// `page`'s items as `T`s, its cursor unchanged.
    pub fn of<S>(page: &crate::store::Page<S>) -> Page<T>
    where
        T: for<'a> From<&'a S>,
    {
        Page {
            items: page.items.iter().map(T::from).collect(),
            next_cursor: page.next_cursor.clone(),
        }
    }
}

/// A tenant with its domains (`GET /admin/tenants/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDetail {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// Attached domains.
    pub domains: Vec<String>,
}

/// `POST /admin/tenants/{id}/domains`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainAttached {
    /// The tenant.
    pub tenant_id: String,
    /// The normalised domain.
    pub domain: String,
}

/// `POST /admin/tenants/{id}/api-keys`: the key is in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKey {
    /// Key id (`key_…`).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The key's visible prefix.
    pub prefix: String,
    /// Its label.
    pub label: String,
    /// The secret key; shown once.
    pub key: String,
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Its id (`aud_…`).
    pub id: String,
    /// Who acted.
    pub actor: String,
    /// What they did, e.g. `tenant.created`.
    pub action: String,
    /// The tenant affected, if any.
    pub tenant_id: Option<String>,
    /// Details, secrets redacted.
    #[schema(value_type = Object)]
    pub details: Value,
    /// When.
    pub created_at: i64,
}

impl From<&StoredAuditEvent> for AuditEvent {
    fn from(e: &StoredAuditEvent) -> AuditEvent {
        AuditEvent {
            id: e.id.as_str().to_owned(),
            actor: e.actor.as_str().to_owned(),
            action: e.action.clone(),
            tenant_id: e.tenant_id.as_ref().map(|t| t.as_str().to_owned()),
            details: e.details.clone(),
            created_at: e.created_at.as_i64(),
        }
    }
}

/// A loaded provider component and its manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct Provider {
    /// Provider id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Component version.
    pub version: String,
    /// Where it was loaded from.
    pub source: String,
    /// Currencies it accepts.
    pub currencies: Vec<String>,
    /// The credentials a tenant gives it.
    pub credential_fields: Vec<CredentialField>,
    /// Origins it may reach.
    pub allowed_hosts: Vec<String>,
}

/// One credential field of a provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialField {
    /// Field name.
    pub name: String,
    /// Label for a form.
    pub label: String,
    /// Whether it is masked once stored.
    pub secret: bool,
    /// Whether it must be given.
    pub required: bool,
}

/// `GET /admin/providers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    /// Loaded providers.
    pub items: Vec<Provider>,
}

/// A tenant's gateway settings, secrets masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Gateway {
    /// Provider id.
    pub provider: String,
    /// Routing priority (higher first).
    pub priority: i64,
    /// Currencies routed to it.
    pub currencies: Vec<String>,
    /// Whether it takes checkouts.
    pub enabled: bool,
    /// Credentials, secret fields masked.
    #[schema(value_type = Object)]
    pub credentials: Value,
    /// The webhook secret, masked.
    pub webhook_secret: Option<String>,
    /// Last change.
    pub updated_at: i64,
    /// The last webhook verdict: `ok`, `failing` (see
    /// `last_webhook_error`), or `null` before any delivery.
    pub webhook_status: Option<String>,
    /// Why the last rejected delivery failed: `wrong_secret` (fix the
    /// secret), `tampered_body`, `signature_mismatch`.
    pub last_webhook_error: Option<String>,
    /// When, unix ms.
    pub last_webhook_error_at: Option<i64>,
}

impl From<GatewayView> for Gateway {
    fn from(v: GatewayView) -> Gateway {
        Gateway {
            provider: v.provider,
            priority: v.priority,
            currencies: v.currencies,
            enabled: v.enabled,
            credentials: v.credentials,
            webhook_secret: v.webhook_secret,
            updated_at: v.updated_at,
            webhook_status: None,
            last_webhook_error: None,
            last_webhook_error_at: None,
        }
    }
}

/// `GET /v1/gateways`: in routing order.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayList {
    /// The settings.
    pub items: Vec<Gateway>,
}

/// A ledger row: a payment, a shipping line or a refund. Rows are never
/// changed once booked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    /// Its id (`pay_…`).
    pub id: String,
    /// The order it belongs to.
    pub order_id: String,
    /// `product`, `shipping` or `refund`.
    pub kind: String,
    /// Row status.
    pub status: String,
    /// Minor units.
    pub amount: i64,
    /// ISO-4217.
    pub currency: String,
    /// The gateway, for gateway payments.
    pub provider: Option<String>,
    /// The gateway's reference.
    pub gateway_reference: Option<String>,
    /// The payment a refund refunds.
    pub refund_of: Option<String>,
    /// The entitlement granted.
    pub user_plan: Option<String>,
    /// What booked it.
    pub source: String,
    /// Creation time.
    pub created_at: i64,
}

impl From<&LedgerRow> for Payment {
    fn from(r: &LedgerRow) -> Payment {
        Payment {
            id: r.id.as_str().to_owned(),
            order_id: r.order_id.as_str().to_owned(),
            kind: r.kind.as_str().to_owned(),
            status: r.status.as_str().to_owned(),
            amount: r.amount.minor,
            currency: r.amount.currency.as_str().to_owned(),
            provider: r.provider.as_ref().map(|p| p.as_str().to_owned()),
            gateway_reference: r.gateway_reference.as_ref().map(|g| g.as_str().to_owned()),
            refund_of: r.refund_of.as_ref().map(|p| p.as_str().to_owned()),
            user_plan: r.entitlement.as_ref().map(|e| e.as_str().to_owned()),
            source: r.source.as_str().to_owned(),
            created_at: r.created_at.as_i64(),
        }
    }
}

/// An order with its ledger rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    /// The order itself.
    #[serde(flatten)]
    pub order: OrderSummary,
    /// Entitlements its approved product rows grant.
    pub granted_user_plans: Vec<String>,
    /// Its ledger rows.
    pub ledger: Vec<Payment>,
    /// What the customer must do next (a checkout that requires action).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub next_action: Option<Value>,
}

impl Order {
    /// The order and its rows.
    pub fn of(o: &StoredOrder, rows: &[LedgerRow]) -> Order {
        let granted = rows
            .iter()
            .filter(|r| {
                r.kind == ledger::EntryKind::Product && r.status == ledger::EntryStatus::Approved
            })
            .filter_map(|r| r.entitlement.as_ref().map(|e| e.as_str().to_owned()))
            .collect();
        Order {
            order: OrderSummary::from(o),
            granted_user_plans: granted,
            ledger: rows.iter().map(Payment::from).collect(),
            next_action: None,
        }
    }
}

/// An order without its rows, as `GET /v1/orders` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderSummary {
    /// Its id (`ord_…`).
    pub id: String,
    /// `checkout`, `manual`, `bulk` or `external`.
    pub kind: String,
    /// Workflow state.
    pub status: String,
    /// Minor units, the sum of its lines.
    pub amount: i64,
    /// ISO-4217.
    pub currency: String,
    /// The gateway it is routed to.
    pub provider: Option<String>,
    /// The gateway's payment reference.
    pub gateway_reference: Option<String>,
    /// Customer details as sent; `null` when the order names none.
    #[schema(value_type = Option<Object>)]
    pub customer: Value,
    /// Metadata the order keeps.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Creation time.
    pub created_at: i64,
}

impl From<&StoredOrder> for OrderSummary {
    fn from(o: &StoredOrder) -> OrderSummary {
        OrderSummary {
            id: o.id.as_str().to_owned(),
            kind: o.kind.as_str().to_owned(),
            status: o.status.as_str().to_owned(),
            amount: o.amount.minor,
            currency: o.amount.currency.as_str().to_owned(),
            provider: o.provider.as_ref().map(|p| p.as_str().to_owned()),
            gateway_reference: o.gateway_reference.as_ref().map(|g| g.as_str().to_owned()),
            customer: o.customer.clone(),
            metadata: o.metadata.clone(),
            created_at: o.created_at.as_i64(),
        }
    }
}

/// `POST /v1/orders/bulk`: one order per user, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkOrders {
    /// The orders.
    pub orders: Vec<Order>,
}

/// A refund the gateway reports as pending: nothing is booked yet, and the
/// amount counts against what can still be refunded.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundHold {
    /// The hold's id.
    pub id: String,
    /// Always `refund_hold`.
    pub object: &'static str,
    /// Always `pending`.
    pub status: &'static str,
    /// The refunded payment.
    pub payment_id: String,
    /// Its order.
    pub order_id: String,
    /// Minor units held.
    pub amount: i64,
    /// ISO-4217.
    pub currency: String,
    /// The gateway.
    pub provider: Option<String>,
    /// The gateway's refund reference.
    pub gateway_refund_reference: Option<String>,
    /// Creation time.
    pub created_at: i64,
}

/// A sum of minor units: a number, or (beyond 64 bits, unreachable short of
/// ~10^8 rows at the maximum) a string of its exact digits.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Sum {
    /// Fits in 64 bits.
    Number(i64),
    /// The exact digits.
    Digits(String),
}

impl From<i128> for Sum {
    fn from(minor: i128) -> Sum {
        match i64::try_from(minor) {
            Ok(fits) => Sum::Number(fits),
            Err(_) => Sum::Digits(minor.to_string()),
        }
    }
}

/// Money of one currency, from the balance projection (kept with every
/// booking, equal to the fold of the ledger rows).
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceItem {
    /// ISO-4217.
    pub currency: String,
    /// Sum of approved payments.
    pub paid: Sum,
    /// Sum of refunds.
    pub refunded: Sum,
    /// `paid − refunded`.
    pub net: Sum,
    /// Held by refunds still in flight (counted in neither `refunded` nor
    /// `net` until booked).
    pub held: Sum,
}

/// `GET /v1/balance`: per currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceList {
    /// One entry per currency.
    pub items: Vec<BalanceItem>,
}

/// The schema of a feature value: `true`/`false` for a flag; a
/// non-negative integer, or `null` for unlimited, for a limit.
pub struct FeatureValueSchema;

impl utoipa::PartialSchema for FeatureValueSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some(
                "A flag: true or false. A limit: a non-negative integer, or null for unlimited.",
            ))
            .into()
    }
}

impl ToSchema for FeatureValueSchema {}

/// A feature definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureDef {
    /// Its key, e.g. `provider.stripe`, `gateways.max`.
    pub key: String,
    /// `flag` or `limit`.
    #[schema(pattern = "^(flag|limit)$")]
    pub kind: String,
    /// The value when no kill switch, override or plan grant applies.
    #[schema(value_type = FeatureValueSchema)]
    pub default: Value,
    /// What it controls.
    pub description: String,
    /// Registered by the host at start (`provider.<id>` and the host's own keys).
    pub builtin: bool,
}

impl From<&crate::features::Feature> for FeatureDef {
    fn from(f: &crate::features::Feature) -> FeatureDef {
        FeatureDef {
            key: f.key.as_str().to_owned(),
            kind: f.kind.as_str().to_owned(),
            default: f.default.to_json(),
            description: f.description.clone(),
            builtin: f.builtin,
        }
    }
}

/// A plan and its grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDef {
    /// The plan's name.
    pub plan: String,
    /// Feature key → granted value.
    #[schema(value_type = std::collections::BTreeMap<String, FeatureValueSchema>)]
    pub grants: serde_json::Map<String, Value>,
}

/// `PUT /admin/tenants/{id}/plan`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPlan {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan now.
    pub plan: String,
}

/// A tenant override.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureOverride {
    /// The tenant.
    pub tenant_id: String,
    /// The feature.
    pub key: String,
    /// The value it sets.
    #[schema(value_type = FeatureValueSchema)]
    pub value: Value,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// When it stops applying (Unix ms); `null`: never.
    pub expires_at: Option<i64>,
    /// When it was set (Unix ms).
    pub created_at: i64,
}

/// A pulled kill switch.
#[derive(Debug, Serialize, ToSchema)]
pub struct KillSwitchDef {
    /// The feature it disables (a flag reads `false`, a limit `0`).
    pub key: String,
    /// Why.
    pub reason: String,
    /// Who pulled it.
    pub actor: String,
    /// When (Unix ms).
    pub created_at: i64,
}

impl From<&crate::features::KillSwitch> for KillSwitchDef {
    fn from(k: &crate::features::KillSwitch) -> KillSwitchDef {
        KillSwitchDef {
            key: k.key.as_str().to_owned(),
            reason: k.reason.clone(),
            actor: k.actor.clone(),
            created_at: k.created_at.as_i64(),
        }
    }
}

/// One evaluated feature, shaped like an OpenFeature evaluation result.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureEvaluation {
    /// The feature key.
    pub key: String,
    /// The effective value.
    #[schema(value_type = FeatureValueSchema)]
    pub value: Value,
    /// Which rule gave it: `kill_switch`, `override`, `plan` or `default`.
    #[schema(pattern = "^(kill_switch|override|plan|default)$")]
    pub source: String,
    /// OpenFeature's variant: `default`, `plan:<name>`, `override`, `kill_switch`.
    pub variant: String,
    /// OpenFeature's reason: `DISABLED`, `TARGETING_MATCH`, `DEFAULT` or `ERROR`.
    pub reason: String,
    /// The operator's reason of an override or kill switch.
    pub detail: Option<String>,
    /// OpenFeature's error code (`FLAG_NOT_FOUND`), if any.
    pub error_code: Option<String>,
}

impl From<&crate::features::Evaluation> for FeatureEvaluation {
    fn from(e: &crate::features::Evaluation) -> FeatureEvaluation {
        FeatureEvaluation {
            key: e.key.clone(),
            value: e.value.to_json(),
            source: e.source.as_str().to_owned(),
            variant: e.variant.clone(),
            reason: e.reason.to_owned(),
            detail: e.detail.clone(),
            error_code: e.error_code.map(str::to_owned),
        }
    }
}

/// A tenant's effective features.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantFeatures {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan.
    pub plan: String,
    /// Every defined feature, by key.
    pub items: Vec<FeatureEvaluation>,
}

/// One metered key's use in the current period (`GET /v1/usage`).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageEntry {
    /// The feature key, e.g. `checkouts.monthly`.
    pub key: String,
    /// Uses counted in the period.
    pub used: u64,
    /// The limit now; `null`: unlimited.
    pub limit: Option<u64>,
    /// What is left before the limit; `null`: unlimited.
    pub remaining: Option<u64>,
    /// The period's first millisecond (the 1st of the month, 00:00 UTC).
    pub period_start: i64,
    /// The first millisecond of the next period.
    pub period_end: i64,
}

impl UsageEntry {
    /// The answer for `u`.
    pub fn of(u: &crate::quota::Usage) -> UsageEntry {
        UsageEntry {
            key: u.key.to_owned(),
            used: u.used,
            limit: u.limit,
            remaining: u.remaining(),
            period_start: u.period.start.as_i64(),
            period_end: u.period.end.as_i64(),
        }
    }
}

/// A tenant's usage of every metered key.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageList {
    /// The tenant.
    pub tenant_id: String,
    /// One entry per metered key.
    pub usage: Vec<UsageEntry>,
}

/// One UTC day's money in one currency through one provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyReportItem {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// ISO-4217.
    pub currency: String,
    /// The gateway; `null` for manual, bulk and external bookings.
    pub provider: Option<String>,
    /// Sum of approved payments.
    pub paid: Sum,
    /// Sum of refunds.
    pub refunded: Sum,
    /// Approved payment rows booked that day.
    pub count: i64,
    /// Refund rows booked that day.
    pub refund_count: i64,
    /// `paid − refunded`.
    pub net: Sum,
}

/// `GET /v1/reports/daily`, `GET /admin/reports/daily`: by day, then currency
/// and provider; days without bookings are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyReport {
    /// First day covered, `YYYY-MM-DD`.
    pub from: String,
    /// Last day covered (included), `YYYY-MM-DD`.
    pub to: String,
    /// One entry per (day, currency, provider) with bookings.
    pub items: Vec<DailyReportItem>,
}
