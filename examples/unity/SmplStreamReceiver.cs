// SmplStreamReceiver: drives a Unity humanoid from smplstream's ZeroMQ stream (wire format v1,
// docs/wire-format.md), through NetMQ. See README.md beside this file.
//
// A background thread receives and decodes messages (checking them like the spec says) and
// keeps only the newest pose; LateUpdate applies it, after the Animator, to the avatar's bones.
//
// Coordinate systems (all matrices act on column vectors):
//   SMPL model frame: right-handed, Y up, the body faces +Z, its left hand towards +X.
//   Camera frame of the stream: OpenCV, right-handed, x right, y down, z forward.
//   Unity: left-handed, Y up, Z forward, X right. A humanoid faces its root's +Z, its right
//   hand towards +X.
// The mirror M = diag(-1, 1, 1) takes SMPL model coordinates to the avatar's local ones (same
// up and forward, left and right swapped by the change of handedness); C = diag(1, -1, 1)
// takes camera coordinates to those of `cameraOrigin` (a Unity camera looks down its +Z with
// +Y up). If G_j is the SMPL world rotation of joint j (root orientation times the local
// rotations down the chain, so it maps the rest pose into the camera frame), a rest-pose
// vector v of the avatar ends at C G_j M v. So Q_j = C G_j M, a proper rotation (two
// mirrors), is the rotation to apply in cameraOrigin's space, and
//     bone_j.rotation = cameraOrigin.rotation * Q_j * restRotation_j
// where restRotation_j is the bone's rotation relative to the avatar's root in its T-pose,
// which the SMPL rest pose also is. World rotations are set parent first, so bones the avatar
// lacks (UpperChest, toes) do not matter.
using System;
using System.Collections.Generic;
using System.Text;
using System.Threading;
using NetMQ;
using NetMQ.Sockets;
using UnityEngine;

public class SmplStreamReceiver : MonoBehaviour
{
    [Tooltip("Publisher endpoint (smplstream run --publish)")]
    public string endpoint = "tcp://127.0.0.1:5555";
    [Tooltip("Humanoid Animator to drive; its avatar must stand in T-pose when the scene starts")]
    public Animator animator;
    [Tooltip("Where the stream's camera is in the scene (null: the scene origin)")]
    public Transform cameraOrigin;
    [Tooltip("Track to follow; -1 follows the lowest track id in each frame")]
    public int trackId = -1;
    [Tooltip("Move the hips to the person's position relative to the camera")]
    public bool applyRootPosition = true;
    public float positionScale = 1f;

    // SMPL joint index -> Unity humanoid bone. SMPL's left_hand and right_hand (22, 23) stand
    // for the fingers, which SMPL does not pose: not mapped.
    static readonly HumanBodyBones[] SmplToUnity =
    {
        HumanBodyBones.Hips, HumanBodyBones.LeftUpperLeg, HumanBodyBones.RightUpperLeg,
        HumanBodyBones.Spine, HumanBodyBones.LeftLowerLeg, HumanBodyBones.RightLowerLeg,
        HumanBodyBones.Chest, HumanBodyBones.LeftFoot, HumanBodyBones.RightFoot,
        HumanBodyBones.UpperChest, HumanBodyBones.LeftToes, HumanBodyBones.RightToes,
        HumanBodyBones.Neck, HumanBodyBones.LeftShoulder, HumanBodyBones.RightShoulder,
        HumanBodyBones.Head, HumanBodyBones.LeftUpperArm, HumanBodyBones.RightUpperArm,
        HumanBodyBones.LeftLowerArm, HumanBodyBones.RightLowerArm, HumanBodyBones.LeftHand,
        HumanBodyBones.RightHand,
    };
    static readonly int[] SmplParents =
        { -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21 };

    // --- header, as JsonUtility reads it (fields it does not know are ignored) ---
    [Serializable] class ArrayDesc { public string name; public string dtype; public int[] shape; public long offset = -1; public long nbytes = -1; }
    [Serializable] class PersonDesc { public long track_id; public float score; public ArrayDesc[] arrays; }
    [Serializable] class Header { public string schema; public int version; public long seq; public long frame_index; public long payload_bytes = -1; public PersonDesc[] persons; }

    class Pose { public long seq; public long trackId; public float[] poses; public float[] pelvis; }

    Transform[] bones;
    Quaternion[] restRotation; // bone rotation relative to the avatar root, T-pose
    Thread thread;
    volatile bool running;
    readonly object poseLock = new object();
    Pose latest;
    long lastApplied = -1;
    public long Received { get; private set; }
    public long Malformed { get; private set; }

    void Start()
    {
        if (animator == null) animator = GetComponent<Animator>();
        if (animator == null || !animator.isHuman)
        {
            Debug.LogError("SmplStreamReceiver: needs a humanoid Animator (Rig: Humanoid)");
            enabled = false;
            return;
        }
        bones = new Transform[SmplToUnity.Length];
        restRotation = new Quaternion[SmplToUnity.Length];
        Quaternion rootInv = Quaternion.Inverse(animator.transform.rotation);
        for (int j = 0; j < SmplToUnity.Length; j++)
        {
            bones[j] = animator.GetBoneTransform(SmplToUnity[j]); // null for optional bones it lacks
            if (bones[j] != null) restRotation[j] = rootInv * bones[j].rotation;
        }
        AsyncIO.ForceDotNet.Force(); // NetMQ in Unity's Mono runtime
        running = true;
        thread = new Thread(Receive) { IsBackground = true, Name = "smplstream" };
        thread.Start();
    }

    void Receive()
    {
        using (var sub = new SubscriberSocket())
        {
            sub.Options.ReceiveHighWatermark = 4; // we only want the newest frame
            sub.Connect(endpoint);
            sub.Subscribe("smplstream.v1");
            var parts = new List<byte[]>();
            while (running)
            {
                if (!sub.TryReceiveMultipartBytes(TimeSpan.FromMilliseconds(100), ref parts, 3)) continue;
                try
                {
                    var pose = Decode(parts);
                    Received++;
                    if (pose != null) lock (poseLock) latest = pose;
                }
                catch (Exception e) when (e is FormatException || e is ArgumentException || e is OverflowException)
                {
                    Malformed++;
                    Debug.LogWarning("SmplStreamReceiver: dropped a malformed message: " + e.Message);
                }
            }
        }
    }

    // Checks the rules of docs/wire-format.md and returns the followed person's pose (null when
    // the frame has none with `poses`).
    Pose Decode(List<byte[]> parts)
    {
        if (parts.Count != 3) throw new FormatException("expected 3 parts, got " + parts.Count);
        if (Encoding.ASCII.GetString(parts[0]) != "smplstream.v1") throw new FormatException("unknown topic");
        if (parts[1].Length > (1 << 20)) throw new FormatException("header too large");
        var header = JsonUtility.FromJson<Header>(Encoding.UTF8.GetString(parts[1]));
        if (header == null || header.schema != "smplstream.frame") throw new FormatException("not a smplstream frame");
        if (header.version != 1) throw new FormatException("unsupported version " + header.version);
        byte[] payload = parts[2];
        if (header.payload_bytes != payload.Length) throw new FormatException("payload_bytes does not match the payload");
        if (header.persons == null) throw new FormatException("no persons list");
        PersonDesc chosen = null;
        foreach (var p in header.persons)
        {
            if (p == null || p.arrays == null || Find(p, "poses") == null) continue;
            if (trackId >= 0 ? p.track_id == trackId : (chosen == null || p.track_id < chosen.track_id)) chosen = p;
        }
        if (chosen == null) return null;
        float[] poses = ReadFloats(Find(chosen, "poses"), payload, 72);
        float[] pelvis = null;
        var joints = Find(chosen, "joints");
        if (joints != null) { var all = ReadFloats(joints, payload, 72); pelvis = new[] { all[0], all[1], all[2] }; }
        else if (Find(chosen, "trans") != null) pelvis = ReadFloats(Find(chosen, "trans"), payload, 3);
        return new Pose { seq = header.seq, trackId = chosen.track_id, poses = poses, pelvis = pelvis };
    }

    static ArrayDesc Find(PersonDesc p, string name)
    {
        foreach (var a in p.arrays) if (a != null && a.name == name) return a;
        return null;
    }

    // `count` little-endian float32 at the descriptor's offset, after checking it against the payload.
    static float[] ReadFloats(ArrayDesc a, byte[] payload, int count)
    {
        if (a.dtype != "<f4") throw new FormatException(a.name + ": dtype " + a.dtype + ", expected <f4");
        long n = 1;
        if (a.shape == null) throw new FormatException(a.name + ": no shape");
        foreach (int d in a.shape) { if (d < 0) throw new FormatException(a.name + ": negative dimension"); n = checked(n * d); }
        if (n != count || a.nbytes != 4L * n) throw new FormatException(a.name + ": unexpected shape or length");
        if (a.offset < 0 || a.offset + a.nbytes > payload.Length) throw new FormatException(a.name + ": outside the payload");
        var result = new float[count];
        var tmp = new byte[4];
        for (int i = 0; i < count; i++)
        {
            Buffer.BlockCopy(payload, (int)a.offset + 4 * i, tmp, 0, 4);
            if (!BitConverter.IsLittleEndian) Array.Reverse(tmp);
            result[i] = BitConverter.ToSingle(tmp, 0);
        }
        return result;
    }

    void LateUpdate()
    {
        Pose pose;
        lock (poseLock) pose = latest;
        if (pose == null || pose.seq == lastApplied) return;
        lastApplied = pose.seq;
        Quaternion originRot = cameraOrigin != null ? cameraOrigin.rotation : Quaternion.identity;
        var G = new float[24][,];
        for (int j = 0; j < 24; j++)
        {
            float[,] local = AxisAngleToMatrix(pose.poses[3 * j], pose.poses[3 * j + 1], pose.poses[3 * j + 2]);
            G[j] = SmplParents[j] < 0 ? local : Mul(G[SmplParents[j]], local);
            if (j >= bones.Length || bones[j] == null) continue;
            // Q = C G M with C = diag(1, -1, 1), M = diag(-1, 1, 1): flip row 1's sign, column 0's sign.
            float[,] q = (float[,])G[j].Clone();
            for (int k = 0; k < 3; k++) { q[1, k] = -q[1, k]; q[k, 0] = -q[k, 0]; }
            var forward = new Vector3(q[0, 2], q[1, 2], q[2, 2]);
            var up = new Vector3(q[0, 1], q[1, 1], q[2, 1]);
            bones[j].rotation = originRot * Quaternion.LookRotation(forward, up) * restRotation[j];
        }
        if (applyRootPosition && pose.pelvis != null && bones[0] != null)
        {
            var local = new Vector3(pose.pelvis[0], -pose.pelvis[1], pose.pelvis[2]) * positionScale; // C p
            bones[0].position = cameraOrigin != null ? cameraOrigin.TransformPoint(local) : local;
        }
    }

    // Rodrigues' formula: the rotation matrix of an axis-angle vector (radians).
    static float[,] AxisAngleToMatrix(float x, float y, float z)
    {
        double angle = Math.Sqrt(x * x + y * y + z * z);
        if (angle < 1e-8) return new float[,] { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } };
        double kx = x / angle, ky = y / angle, kz = z / angle, c = Math.Cos(angle), s = Math.Sin(angle), t = 1 - c;
        return new float[,]
        {
            { (float)(t * kx * kx + c), (float)(t * kx * ky - s * kz), (float)(t * kx * kz + s * ky) },
            { (float)(t * kx * ky + s * kz), (float)(t * ky * ky + c), (float)(t * ky * kz - s * kx) },
            { (float)(t * kx * kz - s * ky), (float)(t * ky * kz + s * kx), (float)(t * kz * kz + c) },
        };
    }

    static float[,] Mul(float[,] a, float[,] b)
    {
        var r = new float[3, 3];
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 3; k++)
                r[i, k] = a[i, 0] * b[0, k] + a[i, 1] * b[1, k] + a[i, 2] * b[2, k];
        return r;
    }

    void OnDestroy()
    {
        running = false;
        if (thread != null && thread.IsAlive) thread.Join(500);
        NetMQConfig.Cleanup(false);
    }
}
