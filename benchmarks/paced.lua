-- wrk script for the paced (latency) rows: each connection waits a fixed number
-- of milliseconds before each request, so the offered rate is roughly
-- connections * 1000 / delay_ms req/s for every contender (well below saturation).
-- Usage: wrk ... -s paced.lua URL -- <delay_ms>
local delay_ms = 10

function init(args)
    if args[1] ~= nil then
        delay_ms = tonumber(args[1])
    end
end

function delay()
    return delay_ms
end
