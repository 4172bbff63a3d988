#!/usr/bin/env python3
"""smplstream -> ROS 2: subscribe to a smplstream publisher (ZeroMQ, wire format v1) and
publish its people into the ROS 2 graph on the topics the MCAP file and the Foxglove server
use (``docs/robots.md``): ``/tf`` (a frame per SMPL joint, ``person_N/<joint>``),
``/tf_static`` (``camera_link -> camera``), ``/smplstream/skeleton`` (markers) and
``/camera/camera_info``.

The messages are built by ``streamer.ros2_messages`` (shared with the MCAP writer and
tested there without ROS); this file only turns them into rclpy messages and publishes
them. Needs a sourced ROS 2 environment (Humble or later) and smplstream installed into
the same Python:

    python3 examples/ros2/smplstream_bridge.py --endpoint tcp://127.0.0.1:5555
    python3 examples/ros2/smplstream_bridge.py --ros-args -r /smplstream/skeleton:=/people/markers
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosidl_runtime_py.set_message import set_message_fields
from sensor_msgs.msg import CameraInfo
from tf2_msgs.msg import TFMessage
from tf2_ros.static_transform_broadcaster import StaticTransformBroadcaster
from visualization_msgs.msg import MarkerArray

from streamer import ros2_messages as rm
from streamer.publisher import DEFAULT_ENDPOINT
from streamer.subscriber import Subscriber

ROS_TYPES = {rm.TF_MESSAGE: TFMessage, rm.MARKER_ARRAY: MarkerArray, rm.CAMERA_INFO: CameraInfo}
CAMERA_INFO_PERIOD = 1.0  # seconds; the stream carries no image to pace it


def to_ros(msg_class, fields: dict):
    """An rclpy message of ``msg_class`` with the fields of a ``ros2_messages`` dict."""
    msg = msg_class()
    set_message_fields(msg, fields)
    return msg


class SmplstreamBridge(Node):
    """Polls the ZeroMQ subscriber from a timer (the executor stays free) and publishes
    every received frame's messages, stamped with its capture time."""

    def __init__(self, endpoint: str, curve_keys: str | None = None):
        super().__init__("smplstream_bridge")
        self.subscriber = Subscriber(endpoint, curve_keys=curve_keys)
        self.publishers_ = {
            rm.TOPIC_TF: self.create_publisher(TFMessage, rm.TOPIC_TF, QoSProfile(depth=100)),  # as tf2_ros does
            rm.TOPIC_SKELETON: self.create_publisher(MarkerArray, rm.TOPIC_SKELETON, 10),
            rm.TOPIC_CAMERA_INFO: self.create_publisher(CameraInfo, rm.TOPIC_CAMERA_INFO, 10),
        }
        self.static_broadcaster = StaticTransformBroadcaster(self)  # latched: late subscribers get it
        self.static_sent = False
        self.tracks = rm.TrackSet()
        self.last_camera_info = float("-inf")
        self.create_timer(0.002, self.poll)
        self.get_logger().info(f"subscribed to {endpoint}")

    def poll(self) -> None:
        while (received := self.subscriber.receive(timeout=0)) is not None:
            self.publish(received.frame)

    def publish(self, frame) -> None:
        if not self.static_sent:
            static = rm.static_tf_message(rm.wire_stamp_ns(frame.header))
            self.static_broadcaster.sendTransform([to_ros(TransformStamped, t) for t in static["transforms"]])
            self.static_sent = True
        now = time.monotonic()
        due = now - self.last_camera_info >= CAMERA_INFO_PERIOD
        if due:
            self.last_camera_info = now
        for topic, fields in rm.wire_messages(frame, self.tracks, camera_info_due=due):
            self.publishers_[topic].publish(to_ros(ROS_TYPES[rm.TOPICS[topic]], fields))

    def destroy_node(self) -> None:
        self.subscriber.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    rclpy.init(args=argv)
    parser = argparse.ArgumentParser(description="Publish a smplstream ZeroMQ stream into ROS 2.")
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"the publisher (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--curve-keys", metavar="DIR", help="client key pair and the publisher's public key")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    node = SmplstreamBridge(args.endpoint, args.curve_keys)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
