"""xcp-httpd: the XenAPI host agent daemon."""
