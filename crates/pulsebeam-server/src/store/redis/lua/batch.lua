-- Several calls in one FCALL, run in the order given, as if each were its own FCALL.
-- ARGV holds, call after call, the script's name (`calls` maps it to its function), how many
-- of KEYS and of ARGV are the call's own, then those arguments; KEYS holds every call's keys
-- in the same order. The reply has two entries per call: 1 and the call's reply, or 0 and the
-- error that ended it. A call that fails keeps what it wrote before the error, as an FCALL
-- does, and the calls after it run all the same. The calls share one reading of the clock.
local function batch(KEYS, ARGV)
    local out, k, a = {}, 1, 1
    -- One clock reading for the batch (now_ms in prelude.lua).
    in_batch, batch_now = true, nil
    while a <= #ARGV do
        local script = calls[ARGV[a]]
        local nkeys, nargs = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
        local keys, args = {}, {}
        for i = 1, nkeys do
            keys[i] = KEYS[k + i - 1]
        end
        for i = 1, nargs do
            args[i] = ARGV[a + 2 + i]
        end
        k, a = k + nkeys, a + 3 + nargs
        local ok, reply = pcall(script, keys, args)
        if ok then
            out[#out + 1] = 1
            -- Not nil, which would end the reply's array here.
            if reply == nil then
                reply = false
            end
            out[#out + 1] = reply
        else
            out[#out + 1] = 0
            if type(reply) == 'table' then
                reply = reply.err
            end
            out[#out + 1] = tostring(reply)
        end
    end
    in_batch, batch_now = false, nil
    return out
end
