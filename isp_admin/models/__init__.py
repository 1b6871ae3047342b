"""All models, imported here so their tables are on the metadata before create_app needs them."""
from isp_admin.models.audit import AuditEvent
from isp_admin.models.customers import Customer
from isp_admin.models.plans import Plan
from isp_admin.models.subscriptions import Subscription
from isp_admin.models.users import ApiToken, User

__all__ = ["ApiToken", "AuditEvent", "Customer", "Plan", "Subscription", "User"]
