"""crm-sync: two-way sync between OMICall CRM contacts and a SQL table."""

__version__ = "0.1.0"
