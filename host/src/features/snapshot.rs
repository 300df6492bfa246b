//! The in-memory picture evaluation reads, and the evaluation rules.
//! Pure: no I/O, no clock of its own (the caller says what time it is).

// foldhash: the snapshot is read on every checkout and API request, and its
// keys are operator-set (not attacker-chosen), so a fast hasher is safe here.
use foldhash::HashMap;

use super::model::{Evaluation, Feature, FeatureKind, FeatureValue, KillSwitch, Override, Source};
use crate::store::{TenantId, UnixMillis};

/// A plan and the values it grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanGrants {
    /// Feature key → granted value.
    pub grants: HashMap<String, FeatureValue>,
}

/// Everything evaluation needs, loaded whole from the database.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Feature key → definition.
    pub features: HashMap<String, Feature>,
    /// Plan name → grants.
    pub plans: HashMap<String, PlanGrants>,
    /// Tenant → plan name, for tenants whose plan is defined.
    pub tenant_plans: HashMap<TenantId, String>,
    /// Tenant → feature key → override (expired ones included; evaluation
    /// skips them).
    pub overrides: HashMap<TenantId, HashMap<String, Override>>,
    /// Feature key → kill switch.
    pub kill_switches: HashMap<String, KillSwitch>,
}

/// The value and its source, without the strings an [`Evaluation`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resolved<'a> {
    pub value: FeatureValue,
    pub source: Source,
    /// The plan that granted it, for [`Source::Plan`].
    pub plan: Option<&'a str>,
    /// The override's or kill switch's reason.
    pub detail: Option<&'a str>,
    /// The key names no feature.
    pub unknown: bool,
}

impl Snapshot {
    /// Evaluation order: kill switch → unexpired tenant override → plan
    /// grant → default. An unknown key is off (a flag that is `false`). A
    /// value whose kind does not match its feature's (a definition changed
    /// after a grant was written) is skipped, as if absent.
    pub(super) fn resolve<'a>(
        &'a self,
        tenant: &TenantId,
        key: &str,
        now: UnixMillis,
    ) -> Resolved<'a> {
        let Some(feature) = self.features.get(key) else {
            return Resolved {
                value: FeatureValue::Flag(false),
                source: Source::Default,
                plan: None,
                detail: None,
                unknown: true,
            };
        };
        let kind = feature.kind;
        let resolved = |value, source, plan, detail| Resolved {
            value,
            source,
            plan,
            detail,
            unknown: false,
        };
        if let Some(kill) = self.kill_switches.get(key) {
            return resolved(
                FeatureValue::killed(kind),
                Source::KillSwitch,
                None,
                Some(kill.reason.as_str()),
            );
        }
        if let Some(o) = self
            .overrides
            .get(tenant)
            .and_then(|by_key| by_key.get(key))
            .filter(|o| o.applies_at(now) && o.value.kind() == kind)
        {
            return resolved(o.value, Source::Override, None, Some(o.reason.as_str()));
        }
        if let Some((plan, value)) = self.tenant_plans.get(tenant).and_then(|plan| {
            let value = self.plans.get(plan)?.grants.get(key)?;
            Some((plan.as_str(), *value))
        }) && value.kind() == kind
        {
            return resolved(value, Source::Plan, Some(plan), None);
        }
        resolved(feature.default, Source::Default, None, None)
    }

    /// [`Snapshot::resolve`] as an OpenFeature-shaped [`Evaluation`].
    pub(super) fn evaluate(&self, tenant: &TenantId, key: &str, now: UnixMillis) -> Evaluation {
        let r = self.resolve(tenant, key, now);
        let variant = match (r.source, r.plan) {
            (Source::Plan, Some(plan)) => format!("plan:{plan}"),
            (source, _) => source.as_str().to_owned(),
        };
        Evaluation {
            key: key.to_owned(),
            value: r.value,
            source: r.source,
            variant,
            reason: if r.unknown {
                "ERROR"
            } else {
                r.source.openfeature_reason()
            },
            detail: r.detail.map(str::to_owned),
            error_code: r.unknown.then_some("FLAG_NOT_FOUND"),
        }
    }

    /// The kind of `key`, if it names a feature.
    pub fn kind_of(&self, key: &str) -> Option<FeatureKind> {
        self.features.get(key).map(|f| f.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::model::FeatureKey;

    fn feature(key: &str, default: FeatureValue) -> Feature {
        Feature {
            key: FeatureKey::parse(key).expect("key"),
            kind: default.kind(),
            default,
            description: String::new(),
            builtin: false,
        }
    }

    fn snapshot(tenant: &TenantId) -> Snapshot {
        let mut s = Snapshot::default();
        s.features.insert(
            "refunds".into(),
            feature("refunds", FeatureValue::Flag(true)),
        );
        s.features.insert(
            "gateways.max".into(),
            feature("gateways.max", FeatureValue::Limit(Some(1))),
        );
        let mut pro = PlanGrants::default();
        pro.grants
            .insert("gateways.max".into(), FeatureValue::Limit(Some(5)));
        // A grant of the wrong kind is ignored, never an error.
        pro.grants
            .insert("refunds".into(), FeatureValue::Limit(Some(3)));
        s.plans.insert("pro".into(), pro);
        s.tenant_plans.insert(tenant.clone(), "pro".into());
        s
    }

    fn over(value: FeatureValue, expires_at: Option<i64>) -> Override {
        Override {
            value,
            reason: "support ticket".into(),
            actor: "operator:admin".into(),
            expires_at: expires_at.map(UnixMillis),
            created_at: UnixMillis(0),
        }
    }

    #[test]
    fn kill_switch_then_override_then_plan_then_default() {
        let t = TenantId::generate();
        let other = TenantId::generate();
        let mut s = snapshot(&t);
        let now = UnixMillis(1_000);
        let at = |s: &Snapshot, tenant: &TenantId, key: &str| {
            let r = s.resolve(tenant, key, now);
            (r.value, r.source)
        };
        assert_eq!(
            at(&s, &t, "gateways.max"),
            (FeatureValue::Limit(Some(5)), Source::Plan)
        );
        assert_eq!(
            at(&s, &other, "gateways.max"),
            (FeatureValue::Limit(Some(1)), Source::Default)
        );
        assert_eq!(
            at(&s, &t, "refunds"),
            (FeatureValue::Flag(true), Source::Default),
            "a grant of the wrong kind is skipped"
        );

        s.overrides.entry(t.clone()).or_default().insert(
            "gateways.max".into(),
            over(FeatureValue::Limit(None), Some(2_000)),
        );
        assert_eq!(
            at(&s, &t, "gateways.max"),
            (FeatureValue::Limit(None), Source::Override)
        );
        let later = s.resolve(&t, "gateways.max", UnixMillis(2_000));
        assert_eq!(
            (later.value, later.source),
            (FeatureValue::Limit(Some(5)), Source::Plan),
            "an override stops applying at its expiry"
        );

        s.kill_switches.insert(
            "gateways.max".into(),
            KillSwitch {
                key: FeatureKey::parse("gateways.max").expect("key"),
                reason: "incident".into(),
                actor: "operator:admin".into(),
                created_at: UnixMillis(0),
            },
        );
        assert_eq!(
            at(&s, &t, "gateways.max"),
            (FeatureValue::Limit(Some(0)), Source::KillSwitch)
        );
    }

    #[test]
    fn an_unknown_key_is_off_and_says_so() {
        let t = TenantId::generate();
        let s = snapshot(&t);
        let e = s.evaluate(&t, "no.such.feature", UnixMillis(0));
        assert_eq!(e.value, FeatureValue::Flag(false));
        assert_eq!(e.source, Source::Default);
        assert_eq!(e.error_code, Some("FLAG_NOT_FOUND"));
        let e = s.evaluate(&t, "gateways.max", UnixMillis(0));
        assert_eq!(
            (e.variant.as_str(), e.reason),
            ("plan:pro", "TARGETING_MATCH")
        );
    }
}
