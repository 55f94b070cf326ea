//! The console's page shell: the document, its stylesheet, the navigation
//! (what the role may see, and nothing else), and the sign-out form.

use maud::{html, Markup, DOCTYPE};

use super::session::{Viewer, CSRF_FIELD};

/// The pages in the navigation: the resource whose `read` shows each.
const PAGES: [(&str, &str, &str); 6] = [
    ("audit.events", "/console/events", "Events"),
    ("audit.integrity", "/console/integrity", "Integrity"),
    ("audit.alerts", "/console/alerts", "Alerts"),
    ("audit.deliveries", "/console/destinations", "Destinations"),
    ("audit.gdpr", "/console/gdpr", "GDPR"),
    ("audit.reports", "/console/reports", "Reports"),
];

/// A whole page: `title`, and `body` inside the shell; `viewer` when signed in.
pub fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    document(title, viewer, body, None)
}

/// A page that follows something running: its `#live` part asks to be
/// read again every `seconds` (htmx, vendored, loaded on such pages only);
/// without script, the whole page reloads as often (a `<noscript>` refresh).
pub fn live_page(title: &str, viewer: &Viewer, body: Markup, seconds: u32) -> Markup {
    document(title, Some(viewer), body, Some(seconds))
}

/// htmx's settings under the console's CSP: no `<style>` of its own, no
/// `eval`, no script from swapped content.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;

fn document(title: &str, viewer: Option<&Viewer>, body: Markup, reload: Option<u32>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = reload {
                    meta name="htmx-config" content=(HTMX_CONFIG);
                    script src="/console/assets/htmx.min.js" defer {}
                    noscript { meta http-equiv="refresh" content=(seconds); }
                }
                title { (title) " · audit-worker" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                @if let Some(viewer) = viewer {
                    header {
                        nav aria-label="Console" {
                            strong { "audit-worker" }
                            @for (resource, href, label) in PAGES {
                                @if viewer.may(resource, "read") {
                                    a href=(href) { (label) }
                                }
                            }
                            @if viewer.operator {
                                a href="/console/operators" { "Operators" }
                            }
                        }
                        span { (viewer.identity.organization_id) " · " (viewer.identity.role) }
                        form method="post" action="/console/logout" {
                            input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf_token);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page that only says why it is refused.
pub fn notice(title: &str, viewer: Option<&Viewer>, message: &str) -> Markup {
    page(
        title,
        viewer,
        html! {
            h1 { (title) }
            p.notice role="alert" { (message) }
        },
    )
}
