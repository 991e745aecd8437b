//! Grafana unified alerting's webhook body to a [`Notification`].
//!
//! Grafana sends Alertmanager's fields plus its own: top-level `orgId`, `state`, `title` and
//! `message`, and per alert `values`, `valueString`, `silenceURL`, `dashboardURL`, `panelURL`,
//! `imageURL`, `ruleUID` and `orgId` (the last two only from newer versions). Those land in the
//! `extra` maps as received; nothing Grafana-specific is required, so older and newer Grafana
//! versions decode alike. Grafana 12's custom payload templates can send any body at all: such a
//! body decodes only if it keeps this shape.

use super::{DecodeError, alertmanager::parse_webhook};
use crate::alert::{Notification, NotificationKind};

/// Decodes a Grafana webhook body.
pub fn decode(body: &[u8]) -> Result<Notification, DecodeError> {
    parse_webhook(NotificationKind::Grafana, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_fields_land_in_extra() {
        let body = br#"{"status":"firing","orgId":1,"state":"alerting","title":"T","message":"M","version":"1",
            "alerts":[{"status":"firing","labels":{"alertname":"A"},"values":{"A":1.5},"panelURL":"http://p"}]}"#;
        let n = decode(body).unwrap();
        assert_eq!(n.kind, NotificationKind::Grafana);
        assert_eq!(n.version, "1");
        assert_eq!(n.extra["orgId"], 1);
        assert_eq!(n.extra["state"], "alerting");
        assert_eq!(n.extra["title"], "T");
        assert_eq!(n.extra["message"], "M");
        assert_eq!(n.alerts[0].extra["values"]["A"], 1.5);
        assert_eq!(n.alerts[0].extra["panelURL"], "http://p");
    }
}
