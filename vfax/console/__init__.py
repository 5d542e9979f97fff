"""The fax console: web pages for the people who run vfax, served by `vfax serve` (docs/console.md)."""
