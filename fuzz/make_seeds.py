#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the golden vectors in testdata/.

Each seed is stored under corpus/<target>/ by the SHA-1 of its bytes, as libFuzzer names its own
finds, so running this again adds nothing new and never disturbs what fuzzing found.
"""

import hashlib
import json
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent
TESTDATA = FUZZ.parent / "testdata"


def write(target, seeds):
    folder = FUZZ / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        if isinstance(seed, str):
            seed = seed.encode()
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)


def main():
    tokens = json.loads((TESTDATA / "original-tokens.json").read_text())
    wire = json.loads((TESTDATA / "wire-examples.json").read_text())
    vectors = tokens["vectors"]

    signed = [v[f] for v in vectors for f in ("fixed_clock", "original_wallclock") if f in v]
    verify = [s["token"] for s in signed]
    # A few shapes a mutator finds slowly: padding, a fourth segment, surrounding space, no signature.
    first = verify[0]
    verify += [first + "=", first + ".e30", " " + first + "\n", first.rsplit(".", 1)[0] + "."]

    claims = [s["header_json"].encode() + b"\xff" + s["payload_json"].encode() for s in signed]

    policies = []
    for v in vectors:
        ap = v["inputs"]["allow_policy"] or {"group_id": "*", "peer_id": "*"}
        policies.append(f'{ap["group_id"]}:{ap["peer_id"]}\n{v["inputs"]["group_id"]}\n{v["inputs"]["peer_id"]}')
    for case in tokens["original_cli_allow_policy_parsing"]["cases"]:
        policies.append(f'{case["allow_policy_arg"]}\nroom\npeer')
    policies += ["a\\:b:*\na:b\nx", "a*a:*\na\nb", "\\\\:x\\\\\n\\\nx\\"]

    # Selector byte: bits 0-1 method (Prepare, Send, Recv), bits 2-3 content type (0 protobuf, 1 JSON).
    method = {"PrepareReq": 0, "SendReq": 1, "RecvReq": 2}
    requests = []
    for example in wire["examples"]:
        kind = example["name"].split(".")[0]
        if kind in method:
            requests.append(bytes([method[kind]]) + bytes.fromhex(example["hex"]))
    src = '{"groupId":"default","peerId":"alice","connId":2818993334}'
    dst = '{"groupId":"default","peerId":"bob","connId":"0"}'
    requests += [
        bytes([0 | 1 << 2]) + b"{}",
        bytes([2 | 1 << 2]) + f'{{"src":{src}}}'.encode(),
        bytes([1 | 1 << 2]) + f'{{"msg":{{"header":{{"src":{src},"dst":{dst},"seqnum":1,"reliable":true}},'
        f'"payload":{{"signal":{{"sdp":{{"kind":"SDP_KIND_OFFER","sdp":"v=0"}}}}}}}}}}'.encode(),
        bytes([1 | 1 << 2]) + f'{{"msg":{{"header":{{"src":{src},"dst":{dst}}},"payload":{{"join":{{}}}}}}}}'.encode(),
    ]

    # gRPC-web: a selector byte (bits 0-1 method: Prepare, Send, Recv, AnalyticsReport; bits 2-3
    # credential: 0 header token, 1 token in the path, 2 none), a grpc-timeout byte (0 none,
    # 5 = "5m", 0x41 = "1S"), then the request message, which the target frames.
    grpc_method = {"PrepareReq": 0, "SendReq": 1, "RecvReq": 2}
    grpc = []
    for example in wire["examples"]:
        kind = example["name"].split(".")[0]
        if kind in grpc_method:
            message = bytes.fromhex(example["hex"])
            for credential in (0, 1, 2):
                grpc.append(bytes([grpc_method[kind] | credential << 2, 0x41]) + message)
    # AnalyticsReportReq{events: [{metrics: [{timestamp_us: 1, event_type: 3009}]}]}
    report = bytes.fromhex("0a071205080210c117")
    grpc += [bytes([3, 0]) + report, bytes([3 | 1 << 2 | 1 << 4, 5]) + report]

    counts = {
        "token_verify": write("token_verify", verify),
        "token_signed": write("token_signed", claims),
        "policy": write("policy", policies),
        "twirp_request": write("twirp_request", requests),
        "grpc_web_request": write("grpc_web_request", grpc),
    }
    print("seeds: " + ", ".join(f"{k} {n}" for k, n in counts.items()))


if __name__ == "__main__":
    main()
