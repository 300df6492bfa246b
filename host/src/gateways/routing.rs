//! Priority-ordered currency routing. Pure: given a tenant's gateways and a
//! cart currency, which gateways may take the payment, in what order.

/// The routing-relevant facts of one configured gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Provider id.
    pub provider: String,
    /// Lower runs first.
    pub priority: i64,
    /// Upper-case ISO codes this gateway is configured for.
    pub currencies: Vec<String>,
    /// Tenant-side switch.
    pub enabled: bool,
}

/// Eligible gateways for `currency`, best first: enabled, configured for the
/// currency, and `permitted` (provider loaded, allowed by features, not
/// kill-switched). Ties on priority break by provider id, so the order is
/// deterministic. The first entry is the route; the rest are fallbacks for
/// retriable failures.
pub fn eligible<'a>(
    entries: &'a [RouteEntry],
    currency: &str,
    permitted: impl Fn(&str) -> bool,
) -> Vec<&'a RouteEntry> {
    let mut out: Vec<&RouteEntry> = entries
        .iter()
        .filter(|e| e.enabled)
        .filter(|e| e.currencies.iter().any(|c| c == currency))
        .filter(|e| permitted(&e.provider))
        .collect();
    out.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| a.provider.cmp(&b.provider))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(provider: &str, priority: i64, currencies: &[&str], enabled: bool) -> RouteEntry {
        RouteEntry {
            provider: provider.into(),
            priority,
            currencies: currencies.iter().map(|c| c.to_string()).collect(),
            enabled,
        }
    }

    #[test]
    fn priority_by_currency_matrix() {
        let entries = vec![
            entry("stripe", 2, &["USD", "EUR"], true),
            entry("paddle", 1, &["EUR"], true),
            entry("yuno", 3, &["BRL", "USD"], true),
        ];
        let all = |_: &str| true;
        let pick = |cur: &str| -> Vec<String> {
            eligible(&entries, cur, all)
                .iter()
                .map(|e| e.provider.clone())
                .collect()
        };
        assert_eq!(pick("EUR"), ["paddle", "stripe"]);
        assert_eq!(pick("USD"), ["stripe", "yuno"]);
        assert_eq!(pick("BRL"), ["yuno"]);
        assert!(pick("JPY").is_empty());
    }

    #[test]
    fn disabled_and_unpermitted_gateways_are_skipped() {
        let entries = vec![
            entry("stripe", 1, &["USD"], false),
            entry("paddle", 2, &["USD"], true),
            entry("yuno", 3, &["USD"], true),
        ];
        let routed = eligible(&entries, "USD", |p| p != "paddle");
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].provider, "yuno");
    }
}
