# Tests of the gateway, one module per gateway module.
