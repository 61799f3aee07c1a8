// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title BLS12381
/// @notice BLS12-381 signatures of the IETF proof-of-possession ciphersuite (public keys in G1, signatures in G2,
/// hash-to-curve BLS12381G2_XMD:SHA-256_SSWU_RO_), on the EIP-2537 precompiles (Prague numbering, checked against
/// anvil --hardfork prague: 0x0b G1ADD, 0x0d G2ADD, 0x0f PAIRING_CHECK, 0x11 MAP_FP2_TO_G2) plus SHA-256 (0x02)
/// and MODEXP (0x05). Points use EIP-2537's uncompressed encoding: each base field element is 64 bytes big-endian
/// (16 zero bytes, then 48), an Fp2 element is c0 || c1, a G1 point x || y (128 bytes), a G2 point x || y (256).
library BLS12381 {
    address private constant SHA256 = address(0x02);
    address private constant MODEXP = address(0x05);
    address private constant G1ADD = address(0x0b);
    address private constant G2ADD = address(0x0d);
    address private constant PAIRING_CHECK = address(0x0f);
    address private constant MAP_FP2_TO_G2 = address(0x11);

    /// @notice The signature DST of the proof-of-possession ciphersuite (Ethereum's).
    bytes internal constant DST = "BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

    /// @notice Raised when a precompile call fails (invalid point, point not in the subgroup, missing precompile).
    error PrecompileFailed(address precompile);

    /// @notice expand_message_xmd (RFC 9380 section 5.3.1) with SHA-256 and DST, 256 output bytes: four 64-byte
    /// chunks, one per base field element of two Fp2 elements.
    function expandMessageXmd(bytes memory message) internal pure returns (bytes memory out) {
        bytes memory dstPrime = abi.encodePacked(DST, uint8(DST.length));
        // msg' = Z_pad (64 zero bytes) || msg || I2OSP(256, 2) || I2OSP(0, 1) || DST'
        bytes32 b0 = sha256(abi.encodePacked(bytes32(0), bytes32(0), message, uint16(256), uint8(0), dstPrime));
        bytes32 bi = sha256(abi.encodePacked(b0, uint8(1), dstPrime));
        out = new bytes(256);
        assembly {
            mstore(add(out, 32), bi)
        }
        for (uint256 i = 2; i <= 8; ++i) {
            bi = sha256(abi.encodePacked(b0 ^ bi, uint8(i), dstPrime));
            assembly {
                mstore(add(out, mul(i, 32)), bi)
            }
        }
    }

    /// @notice The two Fp2 elements hash_to_field gives for `message`, as two 128-byte EIP-2537 Fp2 encodings.
    function hashToFieldFp2(bytes memory message) internal view returns (bytes memory u0, bytes memory u1) {
        bytes memory uniform = expandMessageXmd(message);
        u0 = abi.encodePacked(_reduce(uniform, 0), _reduce(uniform, 64));
        u1 = abi.encodePacked(_reduce(uniform, 128), _reduce(uniform, 192));
    }

    /// @notice hash_to_curve into G2: map each field element with MAP_FP2_TO_G2 (which also clears the cofactor,
    /// a linear map, so clearing each term equals clearing the sum) and add them with G2ADD.
    function hashToG2(bytes memory message) internal view returns (bytes memory) {
        (bytes memory u0, bytes memory u1) = hashToFieldFp2(message);
        bytes memory q0 = _call(MAP_FP2_TO_G2, u0, 256);
        bytes memory q1 = _call(MAP_FP2_TO_G2, u1, 256);
        return _call(G2ADD, abi.encodePacked(q0, q1), 256);
    }

    /// @notice The sum of two G1 points.
    function g1Add(bytes memory a, bytes memory b) internal view returns (bytes memory) {
        return _call(G1ADD, abi.encodePacked(a, b), 128);
    }

    /// @notice Whether `signature` (G2) is a signature of `message` under `pubkey` (G1):
    /// e(pubkey, H(message)) * e(-G1 generator, signature) == 1. The precompile checks both points are in
    /// their subgroups.
    function verify(bytes memory pubkey, bytes memory message, bytes memory signature) internal view returns (bool) {
        bytes memory input = abi.encodePacked(pubkey, hashToG2(message), _negG1Generator(), signature);
        bytes memory out = _call(PAIRING_CHECK, input, 32);
        return uint256(bytes32(out)) == 1;
    }

    function _negG1Generator() private pure returns (bytes memory) {
        return abi.encodePacked(
            bytes16(0),
            hex"17f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb",
            bytes16(0),
            // p - y of the generator
            hex"114d1d6855d545a8aa7d76c8cf2e21f267816aef1db507c96655b9d5caac42364e6f38ba0ecb751bad54dcd6b939c2ca"
        );
    }

    /// @dev The 64 bytes at `offset` of `data` as an integer, reduced mod p with MODEXP (base^1 mod p).
    function _reduce(bytes memory data, uint256 offset) private view returns (bytes memory) {
        bytes memory chunk = new bytes(64);
        assembly {
            mstore(add(chunk, 32), mload(add(add(data, 32), offset)))
            mstore(add(chunk, 64), mload(add(add(data, 64), offset)))
        }
        bytes memory input = abi.encodePacked(
            uint256(64),
            uint256(1),
            uint256(64),
            chunk,
            uint8(1),
            bytes16(0),
            hex"1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab"
        );
        return _call(MODEXP, input, 64);
    }

    function _call(address precompile, bytes memory input, uint256 outLength) private view returns (bytes memory out) {
        out = new bytes(outLength);
        bool ok;
        uint256 returned;
        assembly {
            ok := staticcall(gas(), precompile, add(input, 32), mload(input), add(out, 32), outLength)
            returned := returndatasize()
        }
        if (!ok || returned != outLength) revert PrecompileFailed(precompile);
    }
}

/// @title AttestationVerifier
/// @notice Checks the federation's aggregated BLS attestations of L2 batches (docs/PROTOCOL.md, "Attestations").
/// Holds the registered attestation keys (uncompressed G1, in signer-bitmap order), whose proofs of possession
/// were checked before deployment (btcl2.bridge.attest), the threshold M and the rollup's chain id.
contract AttestationVerifier {
    /// @notice Raised when a constructor argument is unusable.
    error InvalidConfiguration();
    /// @notice Raised when the bitmap names a signer index without a registered key.
    error UnknownSigner(uint32 signers);
    /// @notice Raised when the bitmap names fewer than `required` signers.
    error TooFewSigners(uint256 count, uint256 required);
    /// @notice Raised when the signature is not 256 bytes (an uncompressed G2 point).
    error MalformedSignature();
    /// @notice Raised when the aggregate signature does not verify.
    error BadAggregate(uint64 batchNumber);

    /// @notice The L2 chain id every attestation message names.
    uint64 public immutable chainId;
    /// @notice M: signers an attestation needs.
    uint256 public immutable threshold;
    bytes[] private _pubkeys;

    /// @param chainId_ The rollup's l2_chain_id.
    /// @param pubkeys Attestation keys, 128 bytes each (EIP-2537 G1 encoding), bitmap order; at most 32.
    /// @param threshold_ M, 1 <= M <= number of keys.
    constructor(uint64 chainId_, bytes[] memory pubkeys, uint256 threshold_) {
        if (pubkeys.length == 0 || pubkeys.length > 32 || threshold_ == 0 || threshold_ > pubkeys.length) {
            revert InvalidConfiguration();
        }
        for (uint256 i = 0; i < pubkeys.length; ++i) {
            if (pubkeys[i].length != 128) revert InvalidConfiguration();
            _pubkeys.push(pubkeys[i]);
        }
        chainId = chainId_;
        threshold = threshold_;
    }

    /// @notice Number of registered attestation keys.
    function signerCount() external view returns (uint256) {
        return _pubkeys.length;
    }

    /// @notice Registered key `i` (128 bytes).
    function pubkey(uint256 i) external view returns (bytes memory) {
        return _pubkeys[i];
    }

    /// @notice The 117-byte message signed for a batch: "BL2M", version 1, chain id u64 LE, batch number u64 LE,
    /// batch hash, post-state root, exits root.
    function message(uint64 batchNumber, bytes32 batchHash, bytes32 postStateRoot, bytes32 exitsRoot)
        public
        view
        returns (bytes memory)
    {
        return abi.encodePacked(
            "BL2M", uint8(1), _le64(chainId), _le64(batchNumber), batchHash, postStateRoot, exitsRoot
        );
    }

    /// @notice hash_to_curve of `data` into G2 (256-byte EIP-2537 encoding), exactly as py-ecc computes it.
    function hashToG2(bytes calldata data) external view returns (bytes memory) {
        return BLS12381.hashToG2(data);
    }

    /// @notice Revert unless `signature` (uncompressed G2, 256 bytes) is an aggregate signature of the batch's
    /// message by at least M registered signers named in `signers` (bit i = key i).
    function verify(
        uint64 batchNumber,
        bytes32 batchHash,
        bytes32 postStateRoot,
        bytes32 exitsRoot,
        uint32 signers,
        bytes calldata signature
    ) external view {
        if (signature.length != 256) revert MalformedSignature();
        uint256 n = _pubkeys.length;
        if (n < 32 && signers >> n != 0) revert UnknownSigner(signers);
        bytes memory aggregate;
        uint256 count;
        for (uint256 i = 0; i < n; ++i) {
            if ((signers >> i) & 1 == 0) continue;
            aggregate = count == 0 ? _pubkeys[i] : BLS12381.g1Add(aggregate, _pubkeys[i]);
            ++count;
        }
        if (count < threshold) revert TooFewSigners(count, threshold);
        bytes memory m = message(batchNumber, batchHash, postStateRoot, exitsRoot);
        if (!BLS12381.verify(aggregate, m, signature)) revert BadAggregate(batchNumber);
    }

    function _le64(uint64 v) private pure returns (bytes8) {
        uint64 r = 0;
        for (uint256 i = 0; i < 8; ++i) {
            r = (r << 8) | (v & 0xff);
            v >>= 8;
        }
        return bytes8(r);
    }
}
