//! Stripe's list objects and their cursor pagination, as documented for
//! every `GET /v1/<objects>` endpoint: `limit` (1 to 100, default 10),
//! `starting_after` (the page after that object) or `ending_before` (the page
//! before it), never both; objects newest first; `has_more` says whether
//! another page lies beyond in the direction of travel. The official SDKs'
//! auto-pagination follows `has_more` with `starting_after` (or
//! `ending_before`) set to the last (first) id of the page it got.

use serde_json::{Value, json};

use super::error::ApiError;
use super::form::Params;

/// Stripe's default page size.
const DEFAULT_LIMIT: usize = 10;
/// Stripe's largest page size.
const MAX_LIMIT: usize = 100;

/// The parameters every list endpoint takes (besides `expand[]`).
pub(crate) const LIST_PARAMS: &[&str] = &["limit", "starting_after", "ending_before"];

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    First,
    StartingAfter(String),
    EndingBefore(String),
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageRequest {
    limit: usize,
    cursor: Cursor,
}

impl PageRequest {
    /// Reads `limit`, `starting_after` and `ending_before`: a limit outside
    /// 1..=100 or both cursors at once is a 400 naming the parameter.
    pub(crate) fn parse(params: &Params) -> Result<PageRequest, ApiError> {
        let limit = match params.integer("limit")? {
            None => DEFAULT_LIMIT,
            Some(n) if n < 1 => {
                return Err(ApiError::invalid_param(
                    "parameter_invalid_integer",
                    "limit",
                    "This value must be greater than or equal to 1.",
                ));
            }
            Some(n) => match usize::try_from(n) {
                Ok(n) if n <= MAX_LIMIT => n,
                _ => {
                    return Err(ApiError::invalid_param(
                        "parameter_invalid_integer",
                        "limit",
                        format!("This value must be less than or equal to {MAX_LIMIT}."),
                    ));
                }
            },
        };
        let cursor = match (params.text("starting_after"), params.text("ending_before")) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_param(
                    "parameter_invalid_string",
                    "ending_before",
                    "You may only specify one of these parameters: ending_before, \
                     starting_after.",
                ));
            }
            (Some(id), None) => Cursor::StartingAfter(id.to_owned()),
            (None, Some(id)) => Cursor::EndingBefore(id.to_owned()),
            (None, None) => Cursor::First,
        };
        Ok(PageRequest { limit, cursor })
    }

    /// The requested page of `items` (newest first, each named by `id`) and
    /// whether more lie beyond it. A cursor naming no item is Stripe's 400
    /// `resource_missing` for a `kind` (e.g. `webhook_endpoint`).
    pub(crate) fn page<'a, T>(
        &self,
        items: &'a [T],
        id: impl Fn(&T) -> &str,
        kind: &str,
    ) -> Result<(&'a [T], bool), ApiError> {
        let position = |cursor: &str, param: &str| {
            items
                .iter()
                .position(|item| id(item) == cursor)
                .ok_or_else(|| ApiError::no_such_param_object(kind, cursor, param))
        };
        match &self.cursor {
            Cursor::First => {
                let end = self.limit.min(items.len());
                Ok((&items[..end], end < items.len()))
            }
            Cursor::StartingAfter(cursor) => {
                let start = position(cursor, "starting_after")? + 1;
                let end = (start + self.limit).min(items.len());
                Ok((&items[start..end], end < items.len()))
            }
            Cursor::EndingBefore(cursor) => {
                // The `limit` items right before the cursor, still newest first.
                let end = position(cursor, "ending_before")?;
                let start = end.saturating_sub(self.limit);
                Ok((&items[start..end], start > 0))
            }
        }
    }
}

/// Stripe's list object for `url` (`/v1/webhook_endpoints`).
pub(crate) fn list_json(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({
        "object": "list",
        "url": url,
        "has_more": has_more,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEMS: &[&str] = &["e5", "e4", "e3", "e2", "e1"];

    fn page(query: &str) -> Result<(Vec<&'static str>, bool), Option<Value>> {
        let request = PageRequest::parse(&Params::parse(query.as_bytes()))
            .map_err(|e| Some(e.error_object()))?;
        let (items, more) = request
            .page(ITEMS, |s| s, "thing")
            .map_err(|e| Some(e.error_object()))?;
        Ok((items.to_vec(), more))
    }

    #[test]
    fn first_page_honours_limit_and_says_whether_more_follow() {
        assert_eq!(page(""), Ok((ITEMS.to_vec(), false)));
        assert_eq!(page("limit=2"), Ok((vec!["e5", "e4"], true)));
        assert_eq!(page("limit=5"), Ok((ITEMS.to_vec(), false)));
    }

    #[test]
    fn starting_after_walks_to_older_items_until_the_end() {
        assert_eq!(
            page("limit=2&starting_after=e4"),
            Ok((vec!["e3", "e2"], true))
        );
        assert_eq!(page("limit=2&starting_after=e2"), Ok((vec!["e1"], false)));
        assert_eq!(page("starting_after=e1"), Ok((vec![], false)));
    }

    #[test]
    fn ending_before_gives_the_newer_items_next_to_the_cursor() {
        assert_eq!(
            page("limit=2&ending_before=e2"),
            Ok((vec!["e4", "e3"], true))
        );
        assert_eq!(page("limit=2&ending_before=e4"), Ok((vec!["e5"], false)));
        assert_eq!(page("ending_before=e5"), Ok((vec![], false)));
    }

    #[test]
    fn bad_limits_cursors_and_both_cursors_are_rejected_by_param() {
        let param = |query: &str| {
            page(query)
                .err()
                .flatten()
                .and_then(|e| e["param"].as_str().map(str::to_owned))
        };
        assert_eq!(param("limit=0").as_deref(), Some("limit"));
        assert_eq!(param("limit=101").as_deref(), Some("limit"));
        assert_eq!(param("limit=ten").as_deref(), Some("limit"));
        assert_eq!(
            param("starting_after=e3&ending_before=e1").as_deref(),
            Some("ending_before")
        );
        let unknown = page("starting_after=nope").err().flatten();
        assert_eq!(
            unknown.as_ref().and_then(|e| e["code"].as_str()),
            Some("resource_missing")
        );
        assert_eq!(
            unknown.as_ref().and_then(|e| e["param"].as_str()),
            Some("starting_after")
        );
    }
}
