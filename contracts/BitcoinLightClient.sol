// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title BitcoinLightClient
/// @notice Keeps Bitcoin block headers from a trusted checkpoint on: anyone submits 80-byte headers, the contract
/// checks their linkage and proof of work and follows the chain with the most cumulative work, reorgs included.
/// @dev Every hash here is in Bitcoin's internal byte order (the raw double SHA-256, the reverse of RPC hex).
/// Two difficulty modes: without retargeting (regtest: every header keeps its parent's bits, at most the pow
/// limit) and with Bitcoin's 2016-block retarget (mainnet: bits change only at a retarget boundary, to exactly
/// the value Bitcoin Core computes). Testnet's minimum-difficulty exception is not implemented. Timestamps follow
/// Core: each header's time must exceed the median time past of its last 11 ancestors (skipped for the first 10
/// headers above the checkpoint, whose earlier ancestors the contract does not know); with the retarget rules a
/// header may also be at most 2 hours ahead of the EVM's block.timestamp (regtest mode skips this check: devnet
/// EVM clocks are moved by tests). See docs/PROTOCOL.md, "Light client".
/// @custom:security The regtest mode (retarget false) must never be deployed on a public EVM chain: regtest's
/// pow limit lets anyone mine headers on a laptop. `btcl2 evm deploy` refuses it off local chain ids.
contract BitcoinLightClient {
    /// @notice A stored header and what the contract derived from it.
    struct Header {
        bytes32 parent;
        bytes32 merkleRoot;
        uint128 chainwork; // cumulative work up to and including this header; 0 = unknown header
        uint32 height;
        uint32 time;
        uint32 bits;
        uint32 epochStartTime; // time of the first header of this header's 2016-block period
    }

    /// @notice Raised when submitHeaders gets no header or a length that is not a multiple of 80.
    error BadHeadersLength(uint256 length);
    /// @notice Raised when a header's parent is neither stored nor earlier in the same batch.
    error UnknownParent(bytes32 blockHash, bytes32 parent);
    /// @notice Raised when nBits encodes no valid target (zero, negative, overflowing, above the pow limit).
    error BadTarget(bytes32 blockHash, uint32 bits);
    /// @notice Raised when nBits differs from what the difficulty rules require.
    error BadDifficultyBits(bytes32 blockHash, uint32 bits, uint32 expected);
    /// @notice Raised when the header's hash is above its target.
    error InsufficientProofOfWork(bytes32 blockHash);
    /// @notice Raised when cumulative work would not fit the 128 bits stored per header.
    error ChainworkOverflow(bytes32 blockHash);
    /// @notice Raised when the constructor's checkpoint is inconsistent.
    error BadCheckpoint();
    /// @notice Raised when a header's time is not above the median time past of its last 11 ancestors.
    error TimeTooOld(bytes32 blockHash, uint256 time, uint256 medianTimePast);
    /// @notice Raised (retarget rules only) when a header's time is over 2 hours ahead of the EVM's clock.
    error TimeTooNew(bytes32 blockHash, uint256 time, uint256 latest);

    /// @notice A header was stored (it may or may not be on the best chain).
    event HeaderAdded(bytes32 indexed blockHash, bytes32 indexed parent, uint256 height, uint256 chainwork);
    /// @notice The best tip moved to a branch that does not extend the previous tip.
    event Reorg(bytes32 indexed oldTip, bytes32 indexed newTip, bytes32 forkPoint, uint256 oldHeight, uint256 newHeight);

    uint256 public constant RETARGET_INTERVAL = 2016;
    uint256 public constant TARGET_TIMESPAN = 14 days;
    /// @notice Headers over the median time past uses (Core's nMedianTimeSpan).
    uint256 public constant MEDIAN_TIME_SPAN = 11;
    /// @notice How far ahead of the EVM's clock a header may be, with the retarget rules (Core's MAX_FUTURE_BLOCK_TIME).
    uint256 public constant MAX_FUTURE_BLOCK_TIME = 2 hours;

    /// @notice Whether the 2016-block retarget applies (false: regtest, difficulty never changes).
    bool public immutable retarget;
    /// @notice The easiest target any header may have (Bitcoin Core's powLimit).
    uint256 public immutable powLimit;
    bytes32 public immutable checkpointHash;
    uint256 public immutable checkpointHeight;

    bytes32 public bestHash;
    uint256 public bestHeight;
    mapping(bytes32 => Header) private _headers;
    mapping(uint256 => bytes32) private _bestChain;

    /// @param checkpointHash_ Hash of the checkpoint header (internal order); must match `checkpointHeader`.
    /// @param checkpointHeight_ Its height (a multiple of 2016 when `retarget_`, so its period starts there).
    /// @param checkpointChainwork Its cumulative work (getblockheader's "chainwork"), non-zero, below 2**128.
    /// @param checkpointHeader Its 80 bytes.
    /// @param retarget_ true for mainnet's retarget rules, false for regtest.
    /// @param powLimitBits The pow limit in compact form (0x207fffff on regtest, 0x1d00ffff on mainnet).
    constructor(
        bytes32 checkpointHash_,
        uint256 checkpointHeight_,
        uint256 checkpointChainwork,
        bytes memory checkpointHeader,
        bool retarget_,
        uint32 powLimitBits
    ) {
        (uint256 limit, bool ok) = targetFromBits(powLimitBits);
        if (
            !ok || checkpointHeader.length != 80 || sha256(abi.encodePacked(sha256(checkpointHeader))) != checkpointHash_
                || checkpointChainwork == 0 || checkpointChainwork > type(uint128).max
                || checkpointHeight_ > type(uint32).max || (retarget_ && checkpointHeight_ % RETARGET_INTERVAL != 0)
        ) revert BadCheckpoint();
        retarget = retarget_;
        powLimit = limit;
        checkpointHash = checkpointHash_;
        checkpointHeight = checkpointHeight_;
        uint32 time = uint32(_le32(checkpointHeader, 68));
        bytes32 root;
        assembly {
            root := mload(add(checkpointHeader, 68))
        }
        _headers[checkpointHash_] = Header({
            parent: bytes32(0),
            merkleRoot: root,
            chainwork: uint128(checkpointChainwork),
            height: uint32(checkpointHeight_),
            time: time,
            bits: uint32(_le32(checkpointHeader, 72)),
            epochStartTime: time
        });
        bestHash = checkpointHash_;
        bestHeight = checkpointHeight_;
        _bestChain[checkpointHeight_] = checkpointHash_;
        emit HeaderAdded(checkpointHash_, bytes32(0), checkpointHeight_, checkpointChainwork);
    }

    /// @notice Submit one or more consecutive-or-not 80-byte headers; each must link to a known header (stored,
    /// or earlier in this batch). Headers already stored are skipped, so resubmitting is harmless.
    /// @param headers The concatenated headers, 80 * n bytes, n >= 1.
    function submitHeaders(bytes calldata headers) external {
        uint256 n = headers.length / 80;
        if (n == 0 || headers.length % 80 != 0) revert BadHeadersLength(headers.length);
        for (uint256 i = 0; i < n; ++i) {
            _addHeader(headers[i * 80:(i + 1) * 80]);
        }
    }

    /// @notice Number of confirmations of `blockHash` on the best chain (1 = it is the tip); 0 if it is unknown or
    /// not on the best chain.
    function confirmations(bytes32 blockHash) external view returns (uint256) {
        if (!isInBestChain(blockHash)) return 0;
        return bestHeight - _headers[blockHash].height + 1;
    }

    /// @notice Whether `blockHash` is a stored header on the current best chain.
    function isInBestChain(bytes32 blockHash) public view returns (bool) {
        Header storage h = _headers[blockHash];
        return h.chainwork != 0 && _bestChain[h.height] == blockHash;
    }

    /// @notice The stored header `blockHash` (chainwork 0 if unknown).
    function getHeader(bytes32 blockHash) external view returns (Header memory) {
        return _headers[blockHash];
    }

    /// @notice The Merkle root of the transactions of `blockHash` (zero if unknown).
    function merkleRootOf(bytes32 blockHash) external view returns (bytes32) {
        return _headers[blockHash].merkleRoot;
    }

    /// @notice The best chain's header at `height` (zero outside [checkpointHeight, bestHeight]).
    function hashAtHeight(uint256 height) external view returns (bytes32) {
        return _bestChain[height];
    }

    /// @notice Cumulative work of the best tip.
    function bestChainwork() external view returns (uint256) {
        return _headers[bestHash].chainwork;
    }

    /// @notice The target encoded by compact `bits`, as Bitcoin Core's arith_uint256::SetCompact; ok is false when
    /// the encoding is negative, overflows or is zero.
    function targetFromBits(uint32 bits) public pure returns (uint256 target, bool ok) {
        uint256 size = bits >> 24;
        uint256 word = bits & 0x007fffff;
        if (word == 0 || bits & 0x00800000 != 0) return (0, false);
        if (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32)) return (0, false);
        target = size <= 3 ? word >> (8 * (3 - size)) : word << (8 * (size - 3));
        return (target, target != 0);
    }

    /// @notice The compact form of `target`, as Bitcoin Core's arith_uint256::GetCompact.
    function bitsFromTarget(uint256 target) public pure returns (uint32) {
        uint256 size = 0;
        for (uint256 t = target; t != 0; t >>= 8) ++size;
        uint256 compact = size <= 3 ? target << (8 * (3 - size)) : target >> (8 * (size - 3));
        if (compact & 0x00800000 != 0) {
            compact >>= 8;
            ++size;
        }
        return uint32(compact | (size << 24));
    }

    /// @notice The bits a child of `parentHash` at `height` must carry.
    function expectedBits(bytes32 parentHash, uint256 height) public view returns (uint32) {
        Header storage p = _headers[parentHash];
        if (!retarget || height % RETARGET_INTERVAL != 0) return p.bits;
        // Bitcoin Core's CalculateNextWorkRequired: scale the last target by the period's actual timespan.
        int256 span = int256(uint256(p.time)) - int256(uint256(p.epochStartTime));
        uint256 timespan = span < int256(TARGET_TIMESPAN / 4)
            ? TARGET_TIMESPAN / 4
            : (span > int256(TARGET_TIMESPAN * 4) ? TARGET_TIMESPAN * 4 : uint256(span));
        (uint256 last,) = targetFromBits(p.bits);
        uint256 q = last / TARGET_TIMESPAN;
        uint256 next;
        // last * timespan / TARGET_TIMESPAN without a 256-bit overflow, clamped to the pow limit.
        if (q > powLimit / timespan) next = powLimit;
        else next = q * timespan + ((last % TARGET_TIMESPAN) * timespan) / TARGET_TIMESPAN;
        if (next > powLimit) next = powLimit;
        return bitsFromTarget(next);
    }

    function _addHeader(bytes calldata raw) private {
        bytes32 blockHash = sha256(abi.encodePacked(sha256(raw)));
        if (_headers[blockHash].chainwork != 0) return;
        bytes32 parentHash = bytes32(raw[4:36]);
        Header storage p = _headers[parentHash];
        if (p.chainwork == 0) revert UnknownParent(blockHash, parentHash);
        uint256 height = uint256(p.height) + 1;
        uint32 bits = uint32(_le32c(raw, 72));
        uint32 expected = expectedBits(parentHash, height);
        if (bits != expected) revert BadDifficultyBits(blockHash, bits, expected);
        (uint256 target, bool ok) = targetFromBits(bits);
        if (!ok || target > powLimit) revert BadTarget(blockHash, bits);
        if (_reverseBytes(uint256(blockHash)) > target) revert InsufficientProofOfWork(blockHash);
        // Work of a header: 2**256 / (target + 1), written so that nothing overflows.
        uint256 chainwork = uint256(p.chainwork) + (~target / (target + 1)) + 1;
        if (chainwork > type(uint128).max) revert ChainworkOverflow(blockHash);
        uint32 time = uint32(_le32c(raw, 68));
        _checkTime(blockHash, parentHash, time);
        _headers[blockHash] = Header({
            parent: parentHash,
            merkleRoot: bytes32(raw[36:68]),
            chainwork: uint128(chainwork),
            height: uint32(height),
            time: time,
            bits: bits,
            epochStartTime: height % RETARGET_INTERVAL == 0 ? time : p.epochStartTime
        });
        emit HeaderAdded(blockHash, parentHash, height, chainwork);
        if (chainwork > _headers[bestHash].chainwork) _setBest(blockHash, parentHash, height);
    }

    /// @notice The median of the times of `blockHash` and its ancestors, 11 headers in all (Core's
    /// GetMedianTimePast), over fewer when the contract knows fewer (near the checkpoint); 0 if unknown.
    function medianTimePast(bytes32 blockHash) public view returns (uint256) {
        (uint256 median,) = _medianTimePast(blockHash);
        return median;
    }

    /// @dev (median, how many headers it was taken over).
    function _medianTimePast(bytes32 blockHash) private view returns (uint256 median, uint256 n) {
        uint256[MEDIAN_TIME_SPAN] memory times;
        Header storage h = _headers[blockHash];
        while (n < MEDIAN_TIME_SPAN && h.chainwork != 0) {
            uint256 t = h.time;
            uint256 j = n;
            // Insertion sort, descending: walking back, times mostly fall, so each usually lands at the end.
            // j <= n < 11 keeps every index in range.
            unchecked {
                while (j > 0 && times[j - 1] < t) {
                    times[j] = times[j - 1];
                    --j;
                }
                ++n;
            }
            times[j] = t;
            h = _headers[h.parent];
        }
        // Core sorts ascending and takes index n / 2; in descending order that is n - 1 - n / 2.
        if (n != 0) median = times[n - 1 - n / 2];
    }

    function _checkTime(bytes32 blockHash, bytes32 parentHash, uint256 time) private view {
        (uint256 median, uint256 n) = _medianTimePast(parentHash);
        // Fewer than 11 known ancestors: the checkpoint's own ancestors would be needed to match Core.
        if (n == MEDIAN_TIME_SPAN && time <= median) revert TimeTooOld(blockHash, time, median);
        if (retarget && time > block.timestamp + MAX_FUTURE_BLOCK_TIME) {
            revert TimeTooNew(blockHash, time, block.timestamp + MAX_FUTURE_BLOCK_TIME);
        }
    }

    /// @dev Make `tip` the best tip: rewrite the height index back to the fork point, drop heights above it.
    function _setBest(bytes32 tip, bytes32 parentHash, uint256 height) private {
        bytes32 oldTip = bestHash;
        uint256 oldHeight = bestHeight;
        bestHash = tip;
        bestHeight = height;
        if (parentHash == oldTip) {
            _bestChain[height] = tip;
            return;
        }
        bytes32 cursor = tip;
        uint256 h = height;
        // Terminates at the latest common ancestor: at worst the checkpoint, which every header descends from.
        while (_bestChain[h] != cursor) {
            _bestChain[h] = cursor;
            cursor = _headers[cursor].parent;
            --h;
        }
        for (uint256 i = height + 1; i <= oldHeight; ++i) {
            delete _bestChain[i];
        }
        emit Reorg(oldTip, tip, cursor, oldHeight, height);
    }

    function _le32(bytes memory b, uint256 pos) private pure returns (uint256) {
        return uint256(uint8(b[pos])) | (uint256(uint8(b[pos + 1])) << 8) | (uint256(uint8(b[pos + 2])) << 16)
            | (uint256(uint8(b[pos + 3])) << 24);
    }

    function _le32c(bytes calldata b, uint256 pos) private pure returns (uint256) {
        return uint256(uint8(b[pos])) | (uint256(uint8(b[pos + 1])) << 8) | (uint256(uint8(b[pos + 2])) << 16)
            | (uint256(uint8(b[pos + 3])) << 24);
    }

    /// @dev A hash read as a little-endian number, as Bitcoin compares it with the target.
    function _reverseBytes(uint256 v) private pure returns (uint256) {
        v = ((v >> 8) & 0x00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF)
            | ((v & 0x00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF) << 8);
        v = ((v >> 16) & 0x0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF)
            | ((v & 0x0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF) << 16);
        v = ((v >> 32) & 0x00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF)
            | ((v & 0x00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF) << 32);
        v = ((v >> 64) & 0x0000000000000000FFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF)
            | ((v & 0x0000000000000000FFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF) << 64);
        return (v >> 128) | (v << 128);
    }
}
