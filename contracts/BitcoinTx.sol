// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title BitcoinTx
/// @notice Reading Bitcoin transactions in their legacy (non-witness) serialization, the btcl2 deposit tag, and
/// standard output scripts. Agrees byte for byte with btcl2.core.deposits.parse_deposit (docs/PROTOCOL.md).
library BitcoinTx {
    /// @notice Raised when the transaction bytes cannot be read (short, trailing bytes, non-canonical sizes).
    error MalformedTransaction(uint256 offset);
    /// @notice Raised when the transaction is in the witness serialization (marker 0x00 after the version).
    error WitnessSerialization();
    /// @notice Raised for a 64-byte transaction: it could be an inner Merkle node in disguise.
    error SixtyFourByteTransaction();
    /// @notice Raised when the transaction given as a block's coinbase is not one (one input, null prevout).
    error NotACoinbase();

    /// @notice What an output script is with respect to the deposit tag.
    enum TagStatus {
        NotATag, // not OP_RETURN, or its first push does not start with "BL2D"
        Malformed, // starts like a tag but has another shape, version or kind
        Valid
    }

    /// @notice Everything the Bridge needs from one pass over a deposit transaction.
    struct Deposit {
        bytes32 txid; // double SHA-256 of the serialization, internal byte order
        bool isCoinbase;
        uint256 outputCount;
        uint256 federationOutput; // first output paying the federation script; type(uint256).max if none
        uint64 amount; // value of that output
        bool selectedPaysFederation; // whether the output the caller names pays the federation script
        uint256 tagCount; // outputs whose status is not NotATag
        TagStatus tagStatus; // status of the last tag candidate
        uint8 kind;
        address recipient;
    }

    uint256 internal constant NONE = type(uint256).max;
    bytes4 internal constant DEPOSIT_MAGIC = "BL2D";

    /// @notice Double SHA-256 through the sha256 precompile.
    function sha256d(bytes memory data) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(sha256(data)));
    }

    /// @notice Read a canonical CompactSize at `pos`; returns the value and the next position.
    function readCompactSize(bytes calldata b, uint256 pos) internal pure returns (uint256 value, uint256 next) {
        if (pos >= b.length) revert MalformedTransaction(pos);
        uint8 first = uint8(b[pos]);
        if (first < 0xfd) return (first, pos + 1);
        uint256 width = first == 0xfd ? 2 : (first == 0xfe ? 4 : 8);
        if (b.length - pos - 1 < width) revert MalformedTransaction(pos);
        value = readLE(b, pos + 1, width);
        // The shortest form only, as Bitcoin Core's deserializer demands.
        uint256 minimum = width == 2 ? 0xfd : (width == 4 ? 0x10000 : 0x100000000);
        if (value < minimum) revert MalformedTransaction(pos);
        return (value, pos + 1 + width);
    }

    /// @notice Little-endian unsigned integer of `width` bytes at `pos` (caller checked the bounds).
    function readLE(bytes calldata b, uint256 pos, uint256 width) internal pure returns (uint256 v) {
        for (uint256 i = 0; i < width; ++i) {
            v |= uint256(uint8(b[pos + i])) << (8 * i);
        }
    }

    /// @notice Classify an output script as a deposit tag, exactly as parse_deposit does.
    /// @dev A candidate is an OP_RETURN script whose first push (any push opcode, not truncated) starts with
    /// "BL2D"; a valid one is exactly 6a 1a "BL2D" 01 kind addr20 with kind 1 (L2) or 2 (EVM).
    function classifyTag(bytes calldata spk) internal pure returns (TagStatus status, uint8 kind, address recipient) {
        if (spk.length < 2 || uint8(spk[0]) != 0x6a) return (TagStatus.NotATag, 0, address(0));
        uint8 op = uint8(spk[1]);
        // OP_0 pushes nothing; opcodes above OP_PUSHDATA4 push nothing either.
        if (op == 0 || op > 0x4e) return (TagStatus.NotATag, 0, address(0));
        uint256 pos = 2;
        uint256 size = op;
        if (op >= 0x4c) {
            uint256 width = op == 0x4c ? 1 : (op == 0x4d ? 2 : 4);
            if (spk.length - pos < width) return (TagStatus.NotATag, 0, address(0));
            size = readLE(spk, pos, width);
            pos += width;
        }
        if (spk.length - pos < size || size < 4) return (TagStatus.NotATag, 0, address(0));
        if (bytes4(spk[pos:pos + 4]) != DEPOSIT_MAGIC) return (TagStatus.NotATag, 0, address(0));
        if (spk.length != 28 || op != 26 || uint8(spk[6]) != 1) return (TagStatus.Malformed, 0, address(0));
        kind = uint8(spk[7]);
        if (kind != 1 && kind != 2) return (TagStatus.Malformed, 0, address(0));
        return (TagStatus.Valid, kind, address(bytes20(spk[8:28])));
    }

    /// @notice Whether `s` is exactly a P2PKH, P2SH, P2WPKH, P2WSH or P2TR output script.
    function isStandardScript(bytes calldata s) internal pure returns (bool) {
        uint256 n = s.length;
        if (n == 25) {
            return uint8(s[0]) == 0x76 && uint8(s[1]) == 0xa9 && uint8(s[2]) == 0x14 && uint8(s[23]) == 0x88
                && uint8(s[24]) == 0xac;
        }
        if (n == 23) return uint8(s[0]) == 0xa9 && uint8(s[1]) == 0x14 && uint8(s[22]) == 0x87;
        if (n == 22) return uint8(s[0]) == 0x00 && uint8(s[1]) == 0x14;
        if (n == 34) return (uint8(s[0]) == 0x00 || uint8(s[0]) == 0x51) && uint8(s[1]) == 0x20;
        return false;
    }

    /// @notice Read a legacy-serialized transaction and gather what makes it a deposit.
    /// @param rawTx The transaction without witness data (the form whose double SHA-256 is the txid).
    /// @param federationScriptHash keccak256 of the federation scriptPubKey.
    /// @param selected The output index the caller claims is the deposit.
    function parseDeposit(bytes calldata rawTx, bytes32 federationScriptHash, uint256 selected)
        internal
        pure
        returns (Deposit memory d)
    {
        if (rawTx.length == 64) revert SixtyFourByteTransaction();
        d.txid = sha256d(rawTx);
        d.federationOutput = NONE;
        if (rawTx.length < 10) revert MalformedTransaction(0);
        uint256 pos;
        (d.isCoinbase, pos) = _readInputs(rawTx, 4);
        uint256 count;
        (count, pos) = readCompactSize(rawTx, pos);
        d.outputCount = count;
        for (uint256 i = 0; i < count; ++i) {
            pos = _readOutput(rawTx, pos, i, federationScriptHash, selected, d);
        }
        if (rawTx.length != pos + 4) revert MalformedTransaction(pos);
    }

    /// @notice The txid of a legacy-serialized coinbase transaction; reverts unless `rawTx` parses completely as
    /// a transaction (so it is not 64 bytes: never an inner Merkle node) whose only input spends the null outpoint.
    function coinbaseTxid(bytes calldata rawTx) internal pure returns (bytes32) {
        Deposit memory d = parseDeposit(rawTx, bytes32(0), NONE);
        if (!d.isCoinbase) revert NotACoinbase();
        return d.txid;
    }

    function _readInputs(bytes calldata rawTx, uint256 pos) private pure returns (bool isCoinbase, uint256 next) {
        uint256 count;
        (count, pos) = readCompactSize(rawTx, pos);
        // A zero input count is the segwit marker: the relayer must strip witnesses first.
        if (count == 0) revert WitnessSerialization();
        for (uint256 i = 0; i < count; ++i) {
            if (rawTx.length - pos < 36) revert MalformedTransaction(pos);
            if (count == 1 && bytes32(rawTx[pos:pos + 32]) == bytes32(0) && readLE(rawTx, pos + 32, 4) == 0xffffffff)
            {
                isCoinbase = true;
            }
            uint256 scriptLen;
            (scriptLen, pos) = readCompactSize(rawTx, pos + 36);
            if (rawTx.length - pos < scriptLen + 4) revert MalformedTransaction(pos);
            pos += scriptLen + 4;
        }
        return (isCoinbase, pos);
    }

    function _readOutput(
        bytes calldata rawTx,
        uint256 pos,
        uint256 index,
        bytes32 federationScriptHash,
        uint256 selected,
        Deposit memory d
    ) private pure returns (uint256 next) {
        if (rawTx.length - pos < 8) revert MalformedTransaction(pos);
        uint64 value = uint64(readLE(rawTx, pos, 8));
        uint256 scriptLen;
        (scriptLen, pos) = readCompactSize(rawTx, pos + 8);
        if (rawTx.length - pos < scriptLen) revert MalformedTransaction(pos);
        bytes calldata spk = rawTx[pos:pos + scriptLen];
        if (keccak256(spk) == federationScriptHash) {
            if (d.federationOutput == NONE) {
                d.federationOutput = index;
                d.amount = value;
            }
            if (index == selected) d.selectedPaysFederation = true;
        }
        if (scriptLen > 0 && uint8(spk[0]) == 0x6a) {
            (TagStatus status, uint8 kind, address recipient) = classifyTag(spk);
            if (status != TagStatus.NotATag) {
                d.tagCount += 1;
                d.tagStatus = status;
                d.kind = kind;
                d.recipient = recipient;
            }
        }
        return pos + scriptLen;
    }
}
