"""All models, imported here so their tables are on the metadata before create_app needs them."""
from isp_admin.models.audit import AuditEvent
from isp_admin.models.customers import Customer
from isp_admin.models.imports import CsvImport
from isp_admin.models.invoices import CreditNote, DocumentSequence, Invoice, InvoiceLine
from isp_admin.models.network import (
    CoaRequest,
    GroupAttribute,
    Nas,
    NetworkChange,
    NetworkCredential,
    PlanAttribute,
    RadAcct,
    RadPostAuth,
    SuspensionPolicy,
)
from isp_admin.models.operations import ChangeVersion, JobRun, Notification
from isp_admin.models.payments import (
    CreditAllocation,
    Payment,
    PaymentAllocation,
    PaymentAttempt,
    PaymentProviderSetting,
    ProviderEvent,
)
from isp_admin.models.plans import Plan
from isp_admin.models.portal import PlanChangeRequest, PortalAccount
from isp_admin.models.subscriptions import Subscription, SuspensionPeriod
from isp_admin.models.users import ApiToken, IdempotencyKey, User

__all__ = [
    "ApiToken", "AuditEvent", "ChangeVersion", "CoaRequest", "CreditAllocation", "CreditNote", "Customer",
    "DocumentSequence", "GroupAttribute", "IdempotencyKey", "Invoice", "InvoiceLine", "JobRun", "Nas",
    "NetworkChange", "NetworkCredential", "Notification", "Payment", "PaymentAllocation", "PaymentAttempt",
    "PaymentProviderSetting", "Plan", "PlanAttribute", "PlanChangeRequest", "PortalAccount", "ProviderEvent",
    "RadAcct", "RadPostAuth", "Subscription", "SuspensionPeriod", "SuspensionPolicy", "User",
    "CsvImport",
]
