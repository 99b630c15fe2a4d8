-- Deletes what the polls with `receipts` of connection `conn` handed out.
enter(h, conns, d, boxes, base)
local n = 0
for _, receipt in ipairs(receipts) do n = n + ack(conn, receipt) end
return reply{acknowledged = n}
