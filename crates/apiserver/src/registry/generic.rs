//! The strategy of resources without rules of their own yet: object metadata (done by the
//! generic path), the spec/status split when the resource has a `status` subresource, and
//! generation for workloads. Upstream's own printer columns and validation for these resources
//! come when each gets its own file.

use serde_json::Value;

use super::{NameRule, Strategy};

/// A generic strategy; the constants below are the variants the catalogue uses.
#[derive(Debug)]
pub struct GenericStrategy {
    status: bool,
    generation: bool,
    name_rule: NameRule,
}

impl GenericStrategy {
    /// A resource with a `status` subresource.
    pub const WITH_STATUS: GenericStrategy = GenericStrategy {
        status: true,
        generation: false,
        name_rule: NameRule::Subdomain,
    };
    /// A resource without one (its whole body is written by the main resource).
    pub const NO_STATUS: GenericStrategy = GenericStrategy {
        status: false,
        generation: false,
        name_rule: NameRule::Subdomain,
    };
    /// A workload: `status` subresource and a generation bumped on spec changes.
    pub const WORKLOAD: GenericStrategy = GenericStrategy {
        status: true,
        generation: true,
        name_rule: NameRule::Subdomain,
    };
    /// RBAC objects: path-segment names (`system:controller:x`), no status.
    pub const RBAC: GenericStrategy = GenericStrategy {
        status: false,
        generation: false,
        name_rule: NameRule::PathSegment,
    };
}

impl Strategy for GenericStrategy {
    fn name_rule(&self) -> NameRule {
        self.name_rule
    }

    fn has_status(&self) -> bool {
        self.status
    }

    fn uses_generation(&self) -> bool {
        self.generation
    }

    fn check_shape(&self, obj: &Value) -> Result<(), String> {
        match obj.get("spec") {
            Some(spec) if !spec.is_object() && !spec.is_null() => {
                Err("spec must be an object".into())
            }
            _ => Ok(()),
        }
    }
}
