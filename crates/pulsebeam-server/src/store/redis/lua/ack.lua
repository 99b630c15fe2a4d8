-- Deletes what the polls with ARG.receipts of connection ARG.conn handed out.
local n = 0
for _, receipt in ipairs(ARG.receipts) do n = n + ack(ARG.conn, receipt) end
return reply{acknowledged = n}
