// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BitcoinTx} from "./BitcoinTx.sol";

/// @title AttestationTx
/// @notice Reads one output of a legacy-serialized Bitcoin transaction and checks that it is a btcl2 anchor
/// commitment or attestation record naming a given batch (docs/PROTOCOL.md "Anchors", "Attestations").
library AttestationTx {
    /// @notice Raised when the output is not `OP_RETURN PUSHDATA1 <commitment or record>` naming the batch.
    error NotBatchOutput(bytes32 txid, uint256 outputIndex);

    bytes4 internal constant COMMITMENT_MAGIC = "BL2A";
    bytes4 internal constant RECORD_MAGIC = "BL2T";
    uint256 internal constant COMMITMENT_SIZE = 114;
    uint256 internal constant RECORD_SIZE = 209;

    /// @notice The scriptPubKey of output `index` (reverts MalformedTransaction when unreadable).
    function outputScript(bytes calldata rawTx, uint256 index) internal pure returns (bytes calldata spk) {
        if (rawTx.length < 10) revert BitcoinTx.MalformedTransaction(0);
        uint256 pos = _skipInputs(rawTx, 4);
        uint256 count;
        (count, pos) = BitcoinTx.readCompactSize(rawTx, pos);
        if (index >= count) revert BitcoinTx.MalformedTransaction(pos);
        uint256 len;
        for (uint256 i = 0; i <= index; ++i) {
            if (i > 0) pos += len;
            if (rawTx.length - pos < 8) revert BitcoinTx.MalformedTransaction(pos);
            (len, pos) = BitcoinTx.readCompactSize(rawTx, pos + 8);
            if (rawTx.length - pos < len) revert BitcoinTx.MalformedTransaction(pos);
        }
        spk = rawTx[pos:pos + len];
    }

    /// @notice The push of `OP_RETURN PUSHDATA1 <size bytes>` starting with `magic`, or revert NotBatchOutput.
    function payload(bytes calldata rawTx, uint256 index, bytes4 magic, uint256 size)
        internal
        pure
        returns (bytes calldata data)
    {
        bytes calldata spk = outputScript(rawTx, index);
        if (
            spk.length != size + 3 || uint8(spk[0]) != 0x6a || uint8(spk[1]) != 0x4c || uint8(spk[2]) != size
                || bytes4(spk[3:7]) != magic || uint8(spk[7]) != 1
        ) revert NotBatchOutput(BitcoinTx.sha256d(rawTx), index);
        return spk[3:];
    }

    /// @notice Check that output `index` is an anchor commitment of (number, batch hash, post-state root).
    function checkCommitment(
        bytes calldata rawTx,
        uint256 index,
        uint64 number,
        bytes32 batchHash,
        bytes32 postStateRoot
    ) internal pure {
        bytes calldata c = payload(rawTx, index, COMMITMENT_MAGIC, COMMITMENT_SIZE);
        // magic 4, version 1, codec 1, number u64 LE @6, batch hash @14, post-state root @46
        if (_le64(c, 6) != number || bytes32(c[14:46]) != batchHash || bytes32(c[46:78]) != postStateRoot) {
            revert NotBatchOutput(BitcoinTx.sha256d(rawTx), index);
        }
    }

    /// @notice Check that output `index` is an attestation record of exactly these fields (its 96-byte
    /// compressed signature is not compared: the submitted uncompressed one must pass the pairing check).
    function checkRecord(
        bytes calldata rawTx,
        uint256 index,
        uint64 number,
        bytes32[3] memory roots,
        uint32 signers
    ) internal pure {
        bytes calldata r = payload(rawTx, index, RECORD_MAGIC, RECORD_SIZE);
        // magic 4, version 1, number u64 LE @5, batch hash @13, post-state root @45, exits root @77, bitmap @109
        if (
            _le64(r, 5) != number || bytes32(r[13:45]) != roots[0] || bytes32(r[45:77]) != roots[1]
                || bytes32(r[77:109]) != roots[2] || BitcoinTx.readLE(r, 109, 4) != signers
        ) revert NotBatchOutput(BitcoinTx.sha256d(rawTx), index);
    }

    function _le64(bytes calldata b, uint256 pos) private pure returns (uint64) {
        return uint64(BitcoinTx.readLE(b, pos, 8));
    }

    function _skipInputs(bytes calldata rawTx, uint256 pos) private pure returns (uint256) {
        uint256 count;
        (count, pos) = BitcoinTx.readCompactSize(rawTx, pos);
        if (count == 0) revert BitcoinTx.WitnessSerialization();
        for (uint256 i = 0; i < count; ++i) {
            if (rawTx.length - pos < 36) revert BitcoinTx.MalformedTransaction(pos);
            uint256 scriptLen;
            (scriptLen, pos) = BitcoinTx.readCompactSize(rawTx, pos + 36);
            if (rawTx.length - pos < scriptLen + 4) revert BitcoinTx.MalformedTransaction(pos);
            pos += scriptLen + 4;
        }
        return pos;
    }
}
