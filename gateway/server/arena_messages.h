// A gRPC callback method's request and response in a protobuf arena of their own (gRPC's
// MessageAllocator): their many small fields are laid out in a few blocks and freed at once when the call
// ends. Register with the generated service's SetMessageAllocatorFor_<Method>(&allocator); the allocator
// must outlive the service. Thread-safe (it holds nothing).
#pragma once

#include <google/protobuf/arena.h>
#include <grpcpp/support/message_allocator.h>

namespace osh::gateway {

template <typename Request, typename Response>
class ArenaMessages final : public grpc::MessageAllocator<Request, Response> {
 public:
  grpc::MessageHolder<Request, Response>* AllocateMessages() override { return new Holder(); }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    Holder() {
      this->set_request(google::protobuf::Arena::CreateMessage<Request>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Response>(&arena_));
    }
    void Release() override { delete this; }

   private:
    google::protobuf::Arena arena_;
  };
};

}  // namespace osh::gateway
