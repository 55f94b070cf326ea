//! The console's page shell: the document, its stylesheet, the navigation
//! (what the role may see, and nothing else), and the sign-out form.

use maud::{html, Markup, DOCTYPE};

use super::session::{Viewer, CSRF_FIELD};

/// A whole page: `title`, and `body` inside the shell; `viewer` when signed in.
pub fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · audit-worker" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                @if let Some(viewer) = viewer {
                    header {
                        nav aria-label="Console" {
                            strong { "audit-worker" }
                            @if viewer.may("audit.events", "read") {
                                a href="/console/events" { "Events" }
                            }
                            @if viewer.may("audit.integrity", "read") {
                                a href="/console/integrity" { "Integrity" }
                            }
                            @if viewer.may("audit.alerts", "read") {
                                a href="/console/alerts" { "Alerts" }
                            }
                            @if viewer.may("audit.deliveries", "read") {
                                a href="/console/destinations" { "Destinations" }
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
