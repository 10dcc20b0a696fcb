"""Units of work. A service checks, writes and flushes inside ``audit.action``; the view
that called it commits once, or rolls back on a LabError."""
