"""GridFTP in pure Python: an embedded real server, a client library and protocol helpers."""
