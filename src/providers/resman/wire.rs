//! ResMan's wire formats (PROVIDERS.md Part A and Part B §3): the Partners
//! API's prospects (JSON, read), the legacy MITS methods' XML envelope, and
//! the MITS LeadManagement 4.0 document a lead is pushed as — written with
//! `quick-xml`'s writer, so user data is always escaped, never spliced
//! into markup.

use std::io::Cursor;

use chrono::{DateTime, Utc};
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::{Reader, Writer};
use serde::{Deserialize, Serialize};

/// A Partners API prospect (`GET /Prospects`), the fields syncbridge reads.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Prospect {
    pub prospect_id: String,
    #[serde(default)]
    pub property_id: Option<String>,
    #[serde(default)]
    pub main_person_id: Option<String>,
    /// RFC 3339 or an HTTP-date ([`parse_time`]).
    pub last_modified: String,
    /// `Prospect`, `Lost`, `Applicant` or `Resident`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub lost_reason: Option<String>,
    #[serde(default)]
    pub lost_date: Option<String>,
    #[serde(default)]
    pub prospect_source_name: Option<String>,
    #[serde(default)]
    pub people: Vec<Person>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    #[serde(default)]
    pub person_id: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub is_main_contact: bool,
}

impl Prospect {
    /// The main contact: the person `mainPersonId` names, else the one
    /// marked main, else the first.
    pub fn main_person(&self) -> Option<&Person> {
        self.people
            .iter()
            .find(|p| p.person_id.is_some() && p.person_id == self.main_person_id)
            .or_else(|| self.people.iter().find(|p| p.is_main_contact))
            .or_else(|| self.people.first())
    }

    pub fn modified_at(&self) -> Option<DateTime<Utc>> {
        parse_time(&self.last_modified)
    }
}

/// `{"prospects": [...]}`.
#[derive(Debug, Deserialize)]
pub struct ProspectsAnswer {
    #[serde(default)]
    pub prospects: Vec<serde_json::Value>,
}

/// A ResMan time: RFC 3339 (`2025-03-14T15:42:10Z`) or an HTTP-date
/// (`Fri, 14 Mar 2025 15:42:10 GMT`).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    crate::domain::parse_provider_time(s).or_else(|| {
        DateTime::parse_from_rfc2822(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// What a lead push carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    /// The ProspectID ResMan gave it, for an update.
    pub prospect_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub event: EventType,
    pub event_date: DateTime<Utc>,
    /// The conversation's summary.
    pub comments: Option<String>,
}

/// The MITS event a lead is pushed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    WalkIn,
    Email,
    Call,
    /// A booked tour.
    Appointment,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::WalkIn => "WalkIn",
            EventType::Email => "Email",
            EventType::Call => "Call",
            EventType::Appointment => "Appointment",
        }
    }
}

fn text_element(
    w: &mut Writer<Cursor<Vec<u8>>>,
    name: &str,
    value: &str,
) -> Result<(), std::io::Error> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

/// The MITS LeadManagement 4.0 document of one lead (the `Xml` form field
/// of `MITS/PostLeadManagement4_0`).
pub fn lead_xml(lead: &Lead) -> String {
    let mut w = Writer::new(Cursor::new(Vec::new()));
    let result: Result<(), std::io::Error> = (|| {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))?;
        w.create_element("LeadManagement")
            .write_inner_content(|w| {
                w.create_element("Prospects").write_inner_content(|w| {
                    w.create_element("Prospect").write_inner_content(|w| {
                        w.create_element("Customers").write_inner_content(|w| {
                            w.create_element("Customer")
                                .with_attribute(("Type", "prospect"))
                                .write_inner_content(|w| {
                                    if let Some(id) = &lead.prospect_id {
                                        w.create_element("Identification")
                                            .with_attributes([
                                                ("IDType", "ProspectID"),
                                                ("IDValue", id.as_str()),
                                            ])
                                            .write_empty()?;
                                    }
                                    w.create_element("Name").write_inner_content(|w| {
                                        if let Some(f) = &lead.first_name {
                                            text_element(w, "FirstName", f)?;
                                        }
                                        if let Some(l) = &lead.last_name {
                                            text_element(w, "LastName", l)?;
                                        }
                                        Ok(())
                                    })?;
                                    if let Some(p) = &lead.phone {
                                        w.create_element("Phone")
                                            .with_attribute(("PhoneType", "cell"))
                                            .write_inner_content(|w| {
                                                text_element(w, "PhoneNumber", p)
                                            })?;
                                    }
                                    if let Some(e) = &lead.email {
                                        text_element(w, "Email", e)?;
                                    }
                                    Ok(())
                                })?;
                            Ok(())
                        })?;
                        w.create_element("Events").write_inner_content(|w| {
                            let date = lead
                                .event_date
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                            let event = w.create_element("Event").with_attributes([
                                ("EventType", lead.event.as_str()),
                                ("EventDate", date.as_str()),
                            ]);
                            match &lead.comments {
                                Some(c) => {
                                    event
                                        .write_inner_content(|w| text_element(w, "Comments", c))?;
                                }
                                None => {
                                    event.write_empty()?;
                                }
                            }
                            Ok(())
                        })?;
                        Ok(())
                    })?;
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    })();
    // Writing to memory cannot fail.
    debug_assert!(result.is_ok());
    String::from_utf8(w.into_inner().into_inner()).unwrap_or_default()
}

/// A prospect as a legacy method's answer lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MitsProspect {
    pub prospect_id: Option<String>,
    pub person_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// The MITS envelope: `<ResMan><MethodName/><Status/>[<ErrorDescription/>]
/// <Response>…</Response></ResMan>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    pub method: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub prospects: Vec<MitsProspect>,
}

/// What a legacy answer says went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MitsError {
    /// `Status` other than `Success`: ResMan's `ErrorDescription`.
    #[error("ResMan answered {status}: {description}")]
    Refused { status: String, description: String },
    /// Not the MITS envelope.
    #[error("ResMan's answer is not its XML envelope: {0}")]
    Malformed(String),
}

impl MitsError {
    /// Credentials ResMan refuses: retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            MitsError::Refused { description, .. } => {
                let d = description.to_ascii_lowercase();
                d.contains("invalid apikey")
                    || d.contains("invalid api key")
                    || d.contains("invalid integrationpartnerid")
            }
            MitsError::Malformed(_) => false,
        }
    }
}

/// The envelope as XML (serde through `quick-xml`: entities resolved,
/// unknown elements skipped).
#[derive(Debug, Deserialize)]
struct RawEnvelope {
    #[serde(rename = "MethodName")]
    method: Option<String>,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "ErrorDescription")]
    error: Option<String>,
    #[serde(rename = "Response")]
    response: Option<RawResponse>,
}

#[derive(Debug, Deserialize)]
struct RawResponse {
    #[serde(rename = "LeadManagement")]
    lead_management: Option<RawLeadManagement>,
}

#[derive(Debug, Deserialize)]
struct RawLeadManagement {
    #[serde(rename = "Prospects")]
    prospects: Option<RawProspects>,
}

#[derive(Debug, Deserialize)]
struct RawProspects {
    #[serde(rename = "Prospect", default)]
    prospect: Vec<RawProspect>,
}

#[derive(Debug, Deserialize)]
struct RawProspect {
    #[serde(rename = "Customers")]
    customers: Option<RawCustomers>,
}

#[derive(Debug, Deserialize)]
struct RawCustomers {
    #[serde(rename = "Customer", default)]
    customer: Vec<RawCustomer>,
}

#[derive(Debug, Deserialize)]
struct RawCustomer {
    #[serde(rename = "Identification", default)]
    ids: Vec<RawId>,
    #[serde(rename = "Name")]
    name: Option<RawName>,
    #[serde(rename = "Phone", default)]
    phones: Vec<RawPhone>,
    #[serde(rename = "Email")]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawId {
    #[serde(rename = "@IDType", default)]
    kind: String,
    #[serde(rename = "@IDValue", default)]
    value: String,
}

#[derive(Debug, Deserialize)]
struct RawName {
    #[serde(rename = "FirstName")]
    first: Option<String>,
    #[serde(rename = "LastName")]
    last: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawPhone {
    #[serde(rename = "PhoneNumber")]
    number: Option<String>,
}

/// Reads a legacy answer: the envelope, or why it is an error (`Status`
/// other than `Success`, whatever the HTTP status).
pub fn parse_envelope(xml: &[u8]) -> Result<Envelope, MitsError> {
    let text = std::str::from_utf8(xml).map_err(|e| MitsError::Malformed(e.to_string()))?;
    let root_is_resman = {
        let mut reader = Reader::from_str(text);
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                    break e.local_name().as_ref() == "ResMan";
                }
                Ok(Event::Eof) | Err(_) => break false,
                Ok(_) => {}
            }
        }
    };
    if !root_is_resman {
        return Err(MitsError::Malformed(
            "the root element is not <ResMan>".into(),
        ));
    }
    let raw: RawEnvelope =
        quick_xml::de::from_str(text).map_err(|e| MitsError::Malformed(e.to_string()))?;
    if raw.status != "Success" {
        return Err(MitsError::Refused {
            status: if raw.status.is_empty() {
                "no status".into()
            } else {
                raw.status
            },
            description: raw.error.unwrap_or_default(),
        });
    }
    let prospects = raw
        .response
        .and_then(|r| r.lead_management)
        .and_then(|l| l.prospects)
        .map(|p| p.prospect)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.customers?.customer.into_iter().next())
        .map(|c| {
            let id = |kind: &str| {
                c.ids
                    .iter()
                    .find(|i| i.kind == kind)
                    .map(|i| i.value.clone())
            };
            MitsProspect {
                prospect_id: id("ProspectID"),
                person_id: id("PersonID"),
                first_name: c.name.as_ref().and_then(|n| n.first.clone()),
                last_name: c.name.as_ref().and_then(|n| n.last.clone()),
                email: c.email.clone(),
                phone: c.phones.iter().find_map(|p| p.number.clone()),
            }
        })
        .collect();
    Ok(Envelope {
        method: raw.method,
        status: "Success".into(),
        error: raw.error,
        prospects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH: &str = r#"<ResMan>
  <MethodName>SearchProspects</MethodName>
  <Status>Success</Status>
  <Response>
    <LeadManagement>
      <Prospects>
        <Prospect>
          <Customers>
            <Customer Type="prospect">
              <Identification IDType="ProspectID" IDValue="3f1d9a52-1c0b-4e2a-9c1e-0d3b8c7a6e11"/>
              <Identification IDType="PersonID" IDValue="9b2e4c71-5d3a-4f88-a0c2-77e1d4b9f020"/>
              <Name><FirstName>Dana</FirstName><LastName>Ortiz &amp; Co</LastName></Name>
              <Phone PhoneType="cell"><PhoneNumber>4155550142</PhoneNumber></Phone>
              <Email>dana@ortiz.example</Email>
            </Customer>
          </Customers>
        </Prospect>
      </Prospects>
    </LeadManagement>
  </Response>
</ResMan>"#;

    #[test]
    fn the_envelope_is_read_with_its_prospects() {
        let env = parse_envelope(SEARCH.as_bytes()).unwrap();
        assert_eq!(env.method.as_deref(), Some("SearchProspects"));
        assert_eq!(
            env.prospects,
            [MitsProspect {
                prospect_id: Some("3f1d9a52-1c0b-4e2a-9c1e-0d3b8c7a6e11".into()),
                person_id: Some("9b2e4c71-5d3a-4f88-a0c2-77e1d4b9f020".into()),
                first_name: Some("Dana".into()),
                last_name: Some("Ortiz & Co".into()),
                email: Some("dana@ortiz.example".into()),
                phone: Some("4155550142".into()),
            }]
        );
    }

    #[test]
    fn a_status_other_than_success_is_an_error() {
        let e = parse_envelope(
            b"<ResMan><Status>Error</Status><ErrorDescription>Invalid ApiKey</ErrorDescription></ResMan>",
        )
        .unwrap_err();
        assert!(e.is_permanent(), "{e}");
        let e = parse_envelope(b"<ResMan><Status>Failed</Status></ResMan>").unwrap_err();
        assert!(!e.is_permanent());
        assert!(matches!(
            parse_envelope(b"<html>502 Bad Gateway</html>"),
            Err(MitsError::Malformed(_))
        ));
        assert!(matches!(
            parse_envelope(b"not xml <"),
            Err(MitsError::Malformed(_))
        ));
        assert!(matches!(parse_envelope(b""), Err(MitsError::Malformed(_))));
    }

    #[test]
    fn a_lead_is_a_mits_document_with_user_data_escaped() {
        let lead = Lead {
            prospect_id: Some("P-1".into()),
            first_name: Some("Dana <script>".into()),
            last_name: Some("O'Neil & \"Sons\"".into()),
            email: Some("dana@ortiz.example".into()),
            phone: Some("+14155550142".into()),
            event: EventType::Appointment,
            event_date: "2025-03-14T15:00:00Z".parse().unwrap(),
            comments: Some("Wants a 2BR </Comments><Evil/>".into()),
        };
        let xml = lead_xml(&lead);
        assert!(xml.starts_with(r#"<?xml version="1.0" encoding="utf-8"?><LeadManagement><Prospects><Prospect><Customers><Customer Type="prospect"><Identification IDType="ProspectID" IDValue="P-1"/>"#), "{xml}");
        assert!(
            xml.contains("<FirstName>Dana &lt;script&gt;</FirstName>"),
            "{xml}"
        );
        assert!(!xml.contains("<Evil/>"), "{xml}");
        assert!(xml.contains(
            r#"<Event EventType="Appointment" EventDate="2025-03-14T15:00:00Z"><Comments>"#
        ));
        // It reads back as what was written.
        #[derive(Deserialize)]
        struct Back {
            #[serde(rename = "Prospects")]
            prospects: RawProspectsBack,
        }
        #[derive(Deserialize)]
        struct RawProspectsBack {
            #[serde(rename = "Prospect")]
            prospect: ProspectBack,
        }
        #[derive(Deserialize)]
        struct ProspectBack {
            #[serde(rename = "Customers")]
            customers: RawCustomers,
            #[serde(rename = "Events")]
            events: EventsBack,
        }
        #[derive(Deserialize)]
        struct EventsBack {
            #[serde(rename = "Event")]
            event: EventBack,
        }
        #[derive(Deserialize)]
        struct EventBack {
            #[serde(rename = "Comments")]
            comments: String,
        }
        let back: Back = quick_xml::de::from_str(&xml).unwrap();
        let c = &back.prospects.prospect.customers.customer[0];
        assert_eq!(
            c.name.as_ref().and_then(|n| n.last.as_deref()),
            Some("O'Neil & \"Sons\"")
        );
        assert_eq!(c.ids[0].value, "P-1");
        assert_eq!(
            back.prospects.prospect.events.event.comments,
            "Wants a 2BR </Comments><Evil/>"
        );
        // A create carries no Identification.
        let create = lead_xml(&Lead {
            prospect_id: None,
            ..lead
        });
        assert!(!create.contains("Identification"));
    }

    #[test]
    fn prospects_and_their_times_parse() {
        let p: Prospect = serde_json::from_str(
            r#"{"prospectId":"3f1d","propertyId":"0741","mainPersonId":"9b2e","lastModified":"Fri, 14 Mar 2025 15:42:10 GMT",
                "status":"Lost","lostReason":"Rented elsewhere","people":[
                {"personId":"x","firstName":"Kim","isMainContact":false},
                {"personId":"9b2e","firstName":"Dana","lastName":"Ortiz","email":"dana@ortiz.example","phone":"4155550142","isMainContact":true}]}"#,
        )
        .unwrap();
        assert_eq!(p.main_person().unwrap().first_name.as_deref(), Some("Dana"));
        assert_eq!(
            p.modified_at(),
            Some("2025-03-14T15:42:10Z".parse().unwrap())
        );
        assert_eq!(
            parse_time("2025-03-14T15:42:10Z"),
            Some("2025-03-14T15:42:10Z".parse().unwrap())
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
