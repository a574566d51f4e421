"""The application layer above the library: the `vaelab` command line (`cli`, one module per command in
`commands`), run directories (`runs`) and the table helpers (`tables`). Nothing in the library imports it
(`tests/test_layout.py`); see docs/design.md."""
