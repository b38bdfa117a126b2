"""Audit the user's own segmenter: model sources, subjects by role, the attack as a study."""

from napari_invert.audit.membership import register_membership_attack, run_membership
from napari_invert.audit.runner import ARCH, CONTROL_ARCH, AuditRunner, run_audit
from napari_invert.audit.subjects import AuditRoles, resolve_subjects

__all__ = [
    "ARCH",
    "CONTROL_ARCH",
    "AuditRoles",
    "AuditRunner",
    "register_membership_attack",
    "resolve_subjects",
    "run_audit",
    "run_membership",
]
